#!/usr/bin/env bash
# queue driven by a real NSQ client: nsqjs 0.13.0, pinned in tests/node/
# (package.json + package-lock.json).  Installs it with `npm ci` when
# tests/node/node_modules/nsqjs is missing, starts `ravel queue` on free
# loopback ports with a temporary data directory, and runs
#   node tests/node/queue_nsqjs.test.mjs TCP_PORT HTTP_PORT
# (node:test: PUB, MPUB, DPUB, consume with maxInFlight, TOUCH, REQ with delay,
# timeout and redelivery, heartbeats, Reader/Writer close, HTTP /pub and /stats).
# The server is stopped by its pid on exit, failure included.
# Skips (exit 0, with a message) only when node itself is not installed.
# Usage: check_queue_nsqjs.sh <source dir> <build dir>
set -uo pipefail
src=${1:?usage: check_queue_nsqjs.sh <source dir> <build dir>}
build=${2:?usage: check_queue_nsqjs.sh <source dir> <build dir>}
bin="$build/ravel"
nodedir="$src/tests/node"

fail() {
  echo "FAIL: $*" >&2
  if [ -n "${QUEUE_ERR:-}" ] && [ -s "$QUEUE_ERR" ]; then
    echo "--- queue stderr (last 20 lines) ---" >&2
    tail -n 20 "$QUEUE_ERR" >&2
  fi
  exit 1
}

if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node not found, so the nsqjs test cannot run (install nodejs and npm: scripts/bootstrap)"
  exit 0
fi
[ -x "$bin" ] || fail "$bin not built: run ninja -C $build ravel"
[ -f "$nodedir/package-lock.json" ] || fail "$nodedir/package-lock.json missing"

if [ ! -d "$nodedir/node_modules/nsqjs" ]; then
  command -v npm >/dev/null 2>&1 || fail "npm not found: cannot install nsqjs into $nodedir (install npm: scripts/bootstrap)"
  echo "installing the pinned nsqjs: npm ci in $nodedir"
  (cd "$nodedir" && npm ci --prefer-offline --no-audit --no-fund) || fail "npm ci failed in $nodedir"
fi
nsqjs_version=$(node -p "require('$nodedir/node_modules/nsqjs/package.json').version")
echo "node $(node --version), nsqjs $nsqjs_version"
[ "$nsqjs_version" = 0.13.0 ] || fail "nsqjs $nsqjs_version installed in $nodedir, 0.13.0 pinned: rm -rf $nodedir/node_modules and rerun"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ravel-queue-nsqjs.XXXXXX") || fail "mktemp"
QUEUE_PID=""
QUEUE_ERR=""
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
  stop_pid "$QUEUE_PID"
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'echo "interrupted: cleaning up" >&2; exit 130' INT TERM

now_us() { local t=${EPOCHREALTIME/./}; echo "${t/,/}"; }

# Start the queue; ports picked at random and retried when taken ("in use?").
TCP_PORT=""
HTTP_PORT=""
for ((attempt = 0; attempt < 20; attempt++)); do
  TCP_PORT=$(shuf -i 20000-59999 -n 1)
  HTTP_PORT=$(shuf -i 20000-59999 -n 1)
  [ "$TCP_PORT" = "$HTTP_PORT" ] && continue
  QUEUE_ERR="$tmp/queue.$attempt.err"
  out="$tmp/queue.$attempt.out"
  "$bin" queue --host 127.0.0.1 --tcp-port "$TCP_PORT" --http-port "$HTTP_PORT" --data "$tmp/data" \
    >"$out" 2>"$QUEUE_ERR" &
  QUEUE_PID=$!
  started=0
  deadline=$(($(now_us) + 10000000))
  while [ "$(now_us)" -lt $deadline ]; do
    if grep -q '^queue: NSQ TCP on' "$out" 2>/dev/null; then
      started=1
      break
    fi
    kill -0 "$QUEUE_PID" 2>/dev/null || break
    sleep 0.05
  done
  [ $started = 1 ] && break
  stop_pid "$QUEUE_PID"
  QUEUE_PID=""
  grep -q 'in use' "$QUEUE_ERR" || fail "ravel queue did not start (not a port clash)"
done
[ -n "$QUEUE_PID" ] || fail "ravel queue did not start: no free port pair in 20 attempts"
echo "queue started: pid $QUEUE_PID, NSQ TCP 127.0.0.1:$TCP_PORT, HTTP 127.0.0.1:$HTTP_PORT, data $tmp/data"

# node runs in the background so that a signal to this script can stop it by pid;
# the tests bound their own waits, and timeout(1) bounds node as a whole.
timeout -k 5 50 node "$nodedir/queue_nsqjs.test.mjs" "$TCP_PORT" "$HTTP_PORT" &
NODE_PID=$!
wait "$NODE_PID"
status=$?
NODE_PID=""
[ $status = 124 ] && fail "node queue_nsqjs.test.mjs did not finish within 50 s"
[ $status = 0 ] || fail "node queue_nsqjs.test.mjs exited with status $status"
kill -0 "$QUEUE_PID" 2>/dev/null || fail "ravel queue (pid $QUEUE_PID) is no longer running after the nsqjs tests"
if grep -E 'level=(error|fatal)|AddressSanitizer|runtime error' "$QUEUE_ERR" >/dev/null; then
  grep -E 'level=(error|fatal)|AddressSanitizer|runtime error' "$QUEUE_ERR" | head -n 10 >&2
  fail "ravel queue logged errors during the nsqjs tests"
fi
echo "check_queue_nsqjs: all checks passed"
