#!/usr/bin/env bash
# coord driven by a real Node Redis client: ioredis, pinned in tests/node/
# (package.json + package-lock.json).  Installs it with `npm ci` when
# tests/node/node_modules is missing, starts `ravel coord` on free loopback
# ports with a temporary data directory, and runs
#   node tests/node/coord_ioredis.test.mjs PORT --state STATE
# (node:test), which leaves what the config store held in STATE; then stops
# coord with SIGTERM, restarts it on the same data directory, and runs
#   node tests/node/coord_ioredis.test.mjs PORT --after-restart STATE
# which checks that config, revision and history survived.  Every wait is
# bounded; coord and node are stopped by their pids on exit, failure included.
# Skips (exit 0, with a message) only when node itself is not installed.
# Usage: check_coord_ioredis.sh <source dir> <build dir>
set -uo pipefail
src=${1:?usage: check_coord_ioredis.sh <source dir> <build dir>}
build=${2:?usage: check_coord_ioredis.sh <source dir> <build dir>}
bin="$build/ravel"
nodedir="$src/tests/node"

fail() {
  echo "FAIL: $*" >&2
  if [ -n "${COORD_ERR:-}" ] && [ -s "$COORD_ERR" ]; then
    echo "--- coord stderr (last 20 lines) ---" >&2
    tail -n 20 "$COORD_ERR" >&2
  fi
  exit 1
}

if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node not found, so the ioredis test cannot run (install nodejs and npm: scripts/bootstrap)"
  exit 0
fi
[ -x "$bin" ] || fail "$bin not built: run ninja -C $build ravel"
[ -f "$nodedir/package-lock.json" ] || fail "$nodedir/package-lock.json missing"

if [ ! -d "$nodedir/node_modules/ioredis" ]; then
  command -v npm >/dev/null 2>&1 || fail "npm not found: cannot install ioredis into $nodedir (install npm: scripts/bootstrap)"
  echo "installing the pinned ioredis: npm ci in $nodedir"
  (cd "$nodedir" && npm ci --prefer-offline --no-audit --no-fund) || fail "npm ci failed in $nodedir"
fi
echo "node $(node --version), ioredis $(node -p "require('$nodedir/node_modules/ioredis/package.json').version")"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ravel-coord-ioredis.XXXXXX") || fail "mktemp"
COORD_PID=""
COORD_ERR=""
NODE_PID=""

# Stop one pid we started: TERM, then KILL if it has not gone in 5 s; reap it.
stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  {
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" || break
      sleep 0.05
    done
    kill -0 "$pid" && kill -KILL "$pid"
    wait "$pid"
  } 2>/dev/null
  return 0
}

cleanup() {
  local rc=$?
  stop_pid "$NODE_PID"
  stop_pid "$COORD_PID"
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'echo "interrupted: cleaning up" >&2; exit 130' INT TERM

now_us() { local t=${EPOCHREALTIME/./}; echo "${t/,/}"; }

# Start coord on $tmp/data; ports picked at random and retried when taken
# ("in use?"); a restart tries the previous ports first.
PORT=""
ADMIN_PORT=""
BOOTS=0
start_coord() {
  local attempt out started deadline
  BOOTS=$((BOOTS + 1))
  COORD_PID=""
  for ((attempt = 0; attempt < 20; attempt++)); do
    if [ $attempt -gt 0 ] || [ -z "$PORT" ]; then
      PORT=$(shuf -i 20000-59999 -n 1)
      ADMIN_PORT=$(shuf -i 20000-59999 -n 1)
      [ "$PORT" = "$ADMIN_PORT" ] && continue
    fi
    COORD_ERR="$tmp/coord.$BOOTS.$attempt.err"
    out="$tmp/coord.$BOOTS.$attempt.out"
    "$bin" coord --host 127.0.0.1 --port "$PORT" --admin-port "$ADMIN_PORT" --data "$tmp/data" \
      >"$out" 2>"$COORD_ERR" &
    COORD_PID=$!
    started=0
    deadline=$(($(now_us) + 10000000))
    while [ "$(now_us)" -lt $deadline ]; do
      if grep -q '^coord: RESP on' "$out" 2>/dev/null; then
        started=1
        break
      fi
      kill -0 "$COORD_PID" 2>/dev/null || break
      sleep 0.05
    done
    [ $started = 1 ] && break
    stop_pid "$COORD_PID"
    COORD_PID=""
    grep -q 'in use' "$COORD_ERR" || fail "coord did not start (not a port clash)"
  done
  [ -n "$COORD_PID" ] || fail "coord did not start: no free port pair in 20 attempts"
  echo "coord started: pid $COORD_PID, RESP 127.0.0.1:$PORT, data $tmp/data (start #$BOOTS)"
}

# SIGTERM coord and wait (bounded) for it to exit with status 0.
stop_coord() {
  local i status
  kill -0 "$COORD_PID" 2>/dev/null || fail "coord (pid $COORD_PID) is not running"
  kill -TERM "$COORD_PID"
  for ((i = 0; i < 200; i++)); do
    kill -0 "$COORD_PID" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$COORD_PID" 2>/dev/null && fail "coord (pid $COORD_PID) still runs 10 s after SIGTERM"
  wait "$COORD_PID"
  status=$?
  echo "coord pid $COORD_PID stopped by SIGTERM (exit status $status)"
  COORD_PID=""
  [ $status = 0 ] || fail "coord exited with status $status after SIGTERM (expected 0)"
}

# node runs in the background so that a signal to this script can stop it by pid.
run_node() {
  local status
  node "$nodedir/coord_ioredis.test.mjs" "$PORT" "$@" &
  NODE_PID=$!
  wait "$NODE_PID"
  status=$?
  NODE_PID=""
  [ $status = 0 ] || fail "node coord_ioredis.test.mjs $PORT $* exited with status $status"
  kill -0 "$COORD_PID" 2>/dev/null || fail "coord (pid $COORD_PID) is no longer running after the node tests"
}

state="$tmp/cfg-state.json"
start_coord
run_node --state "$state"
[ -s "$state" ] || fail "the node tests left no config state in $state"
stop_coord
start_coord
run_node --after-restart "$state"
echo "check_coord_ioredis: all checks passed"
