#!/usr/bin/env bash
# coord_bench.sh: ravel coord against redis-server and single-node etcd, side by side.
#
# Run from the repository root (the Makefile's bench-coord target, if one is
# added, should run exactly this):
#
#     bash bench/coord_bench.sh
#
# Extra arguments go to the benchmark program (bench/coord_bench.c, whose top
# comment says what is measured and how), e.g.
#     bash bench/coord_bench.sh --duration-ms 1000 --redis-retry-us 1000
# Environment:
#     BUILD_DIR=build-bench       where to configure and build ravel and coord_bench
#     BUILD=0                     use the binaries already in $BUILD_DIR, do not build
#     COORD_PERF=path/perf.data   also record coord with `perf record -g` while it runs
#     WAIT_IDLE_S=N               wait up to N s for the CPUs to be idle before starting
#                                 (default 0: just report how idle they were)
#
# What it does, all on 127.0.0.1 and bounded in time:
#   1. installs redis-server and etcd-server from Debian if missing (idempotent);
#   2. builds `ravel` and `coord_bench` in $BUILD_DIR;
#   3. starts redis-server, etcd and `ravel coord` directly (not as system
#      services) on free ports, each with a fresh temp dir;
#   4. runs coord_bench against the three, in 5 interleaved rounds: cycle
#      phases of 0.3 s warm-up + 2 s, {1, 50 clients} x 3 systems, then hand-off
#      phases of at most 2000 hand-offs or 5 s each (about 100 s in all);
#   5. on exit, however it exits, kills the servers it started by pid and
#      removes the temp dir.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${BUILD_DIR:-build-bench}
case $build in /*) ;; *) build=$root/$build ;; esac

readonly HOST=127.0.0.1
readonly READY_TIMEOUT_S=15       # how long a server may take to answer
readonly PORT_MIN=20000 PORT_SPAN=30000
readonly IDLE_MIN_PCT=85          # below this, other work competes and the figures are noisy
readonly IDLE_SAMPLE_S=2

log() { printf 'coord_bench.sh: %s\n' "$*" >&2; }

# ---- 1. peers from Debian ------------------------------------------------------------
install_if_missing() {
  local pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 && continue
    log "installing $pkg"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    # Debian's policy-rc.d keeps the packaged services from starting; we run the binaries.
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$pkg" ||
      { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
          $sudo apt-get install -y -qq --no-install-recommends "$pkg"; }
  done
}
install_if_missing redis-server etcd-server redis-tools curl

# ---- 2. build ----------------------------------------------------------------------------
buildlog=$(mktemp "${TMPDIR:-/tmp}/coord_bench_build.XXXXXX")
if [ "${BUILD:-1}" = 0 ]; then
  :
elif ! { [ -f "$build/build.ninja" ] ||
       cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
         -DRAVEL_TESTS=OFF; } \
     >"$buildlog" 2>&1 || ! ninja -C "$build" ravel coord_bench >>"$buildlog" 2>&1; then
  log "build failed:"
  tail -n 40 "$buildlog" >&2
  rm -f "$buildlog"
  exit 1
fi
rm -f "$buildlog"
ravel=$build/ravel
bench=$build/bench/coord_bench
for b in "$ravel" "$bench"; do
  [ -x "$b" ] || { log "$b is missing: build it (drop BUILD=0)"; exit 1; }
done
for arg in "$@"; do
  case $arg in -h | --help) exec "$bench" --help ;; esac
done

# ---- 3. servers ----------------------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coord_bench.XXXXXX")
pids=()
perf_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
  fi
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
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

# wait_ready NAME PID CMD...: until CMD succeeds, the process is alive, or the timeout.
wait_ready() {
  local name=$1 pid=$2
  shift 2
  local deadline=$((SECONDS + READY_TIMEOUT_S))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "$name exited at start; its log:"
      tail -n 20 "$tmp/$name.log" >&2 || true
      return 1
    fi
    if ((SECONDS >= deadline)); then
      log "$name did not answer within ${READY_TIMEOUT_S}s; its log:"
      tail -n 20 "$tmp/$name.log" >&2 || true
      return 1
    fi
    sleep 0.05
  done
}

redis_port=$(free_port)
mkdir -p "$tmp/redis"
redis-server --bind "$HOST" --port "$redis_port" --save '' --appendonly no --daemonize no \
  --dir "$tmp/redis" --protected-mode yes >"$tmp/redis.log" 2>&1 &
pids+=($!)
wait_ready redis "${pids[-1]}" redis-cli -h "$HOST" -p "$redis_port" PING

etcd_port=$(free_port)
etcd_peer_port=$(free_port)
etcd --name coord-bench --data-dir "$tmp/etcd" \
  --listen-client-urls "http://$HOST:$etcd_port" --advertise-client-urls "http://$HOST:$etcd_port" \
  --listen-peer-urls "http://$HOST:$etcd_peer_port" \
  --initial-advertise-peer-urls "http://$HOST:$etcd_peer_port" \
  --initial-cluster "coord-bench=http://$HOST:$etcd_peer_port" \
  --logger zap --log-level warn >"$tmp/etcd.log" 2>&1 &
pids+=($!)
wait_ready etcd "${pids[-1]}" curl -sf -m 1 "http://$HOST:$etcd_port/version"

coord_port=$(free_port)
coord_admin_port=$(free_port)
"$ravel" coord --host "$HOST" --port "$coord_port" --admin-port "$coord_admin_port" \
  --data "$tmp/coord" --log-level warn >"$tmp/coord.log" 2>&1 &
coord_pid=$!
pids+=("$coord_pid")
wait_ready coord "$coord_pid" redis-cli -h "$HOST" -p "$coord_port" PING

if [ -n "${COORD_PERF:-}" ]; then
  perf record -g -o "$COORD_PERF" -p "$coord_pid" >"$tmp/perf.log" 2>&1 &
  perf_pid=$!
  log "perf recording coord (pid $coord_pid) to $COORD_PERF"
fi

redis_version=$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')
etcd_version=$(curl -sf "http://$HOST:$etcd_port/version" |
  sed -n 's/.*"etcdserver":"\([^"]*\)".*/\1/p')
log "redis-server $redis_version on :$redis_port, etcd $etcd_version on :$etcd_port," \
  "ravel coord on :$coord_port; $(nproc) CPUs; data under $tmp"

# ---- 4. the benchmark ------------------------------------------------------------------------
# CPU idle percentage over IDLE_SAMPLE_S seconds, from /proc/stat.
cpu_idle_pct() {
  local _c u n s i w q sq st t1 i1
  read -r _c u n s i w q sq st _ </proc/stat
  t1=$((u + n + s + i + w + q + sq + st)) i1=$((i + w))
  sleep "$IDLE_SAMPLE_S"
  read -r _c u n s i w q sq st _ </proc/stat
  echo $((100 * (i + w - i1) / (u + n + s + i + w + q + sq + st - t1)))
}
idle=$(cpu_idle_pct)
deadline=$((SECONDS + ${WAIT_IDLE_S:-0}))
while ((idle < IDLE_MIN_PCT && SECONDS < deadline)); do
  idle=$(cpu_idle_pct)
done
if ((idle < IDLE_MIN_PCT)); then
  log "WARNING: the CPUs were only ${idle}% idle before the run: other work competes," \
    "and the figures will be noisy (WAIT_IDLE_S=300 waits for a quiet machine)"
else
  log "CPUs ${idle}% idle before the run"
fi
# In the background, so that INT/TERM run the cleanup at once rather than after the run.
"$bench" --coord "$coord_port" --redis "$redis_port" --etcd "$etcd_port" "$@" &
pids=("$!" "${pids[@]}")
wait "${pids[0]}"
