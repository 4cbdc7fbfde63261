#!/usr/bin/env bash
# kill -9 durability test for `ravel queue`: tests/scripts/queue_crash.py runs
# K rounds (default 8, RAVEL_QUEUE_CRASH_ROUNDS) on one data directory.  Each
# round two producers MPUB unique bodies over TCP (--sync always) while a
# consumer FINs what it gets; after N acknowledged messages (random per round)
# the server is killed with SIGKILL, restarted on the same data directory and
# the channel drained.  Fails if any acknowledged message is neither FIN'd
# before the kill nor delivered after the restart (lost must be 0), or if a
# body nobody published comes out.  Redeliveries of FIN'd messages (allowed
# within the FIN window of docs/queue.md) are counted and printed.
# The driver records the server's pid in the temp dir; this script kills it on
# exit whatever happened, and removes the temp dir.  Bounded: the driver starts
# no new round after 25 s (at least 2 rounds), so about 15-35 s, 55 s at most.
# Skips (exit 0, with a message) only when python3 is not installed.
# Usage: check_queue_crash.sh <source dir> <build dir>
set -uo pipefail
src=${1:?usage: check_queue_crash.sh <source dir> <build dir>}
build=${2:?usage: check_queue_crash.sh <source dir> <build dir>}
bin="$build/ravel"
driver="$src/tests/scripts/queue_crash.py"

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

if ! command -v python3 >/dev/null 2>&1; then
  echo "SKIP: python3 not found, so the queue crash test cannot run"
  exit 0
fi
[ -x "$bin" ] || fail "$bin not built: run ninja -C $build ravel"
[ -f "$driver" ] || fail "$driver missing"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ravel-queue-crash.XXXXXX") || fail "mktemp"
DRIVER_PID=""

# Stop one pid we started: TERM, then KILL if it has not gone in 5 s.
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
  } 2>/dev/null
  return 0
}

cleanup() {
  local rc=$?
  stop_pid "$DRIVER_PID"
  [ -n "$DRIVER_PID" ] && wait "$DRIVER_PID" 2>/dev/null
  # The server the driver was running, if it could not stop it itself.
  if [ -s "$tmp/server.pid" ]; then
    pid=$(cat "$tmp/server.pid")
    kill -KILL "$pid" 2>/dev/null
  fi
  if [ $rc != 0 ]; then
    for f in "$tmp"/server.*.err; do
      [ -s "$f" ] || continue
      echo "--- $(basename "$f") (last 10 lines) ---" >&2
      tail -n 10 "$f" >&2
    done
  fi
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'echo "interrupted: cleaning up" >&2; exit 130' INT TERM

# The driver runs in the background so that a signal to this script can stop it by pid;
# timeout(1) bounds it as a whole.
timeout -k 5 55 python3 "$driver" --bin "$bin" --data "$tmp/data" --workdir "$tmp" \
  --rounds "${RAVEL_QUEUE_CRASH_ROUNDS:-8}" ${RAVEL_QUEUE_CRASH_SEED:+--seed "$RAVEL_QUEUE_CRASH_SEED"} &
DRIVER_PID=$!
wait "$DRIVER_PID"
status=$?
DRIVER_PID=""
[ $status = 124 ] && fail "queue_crash.py did not finish within 55 s"
[ $status = 0 ] || fail "queue_crash.py exited with status $status"
echo "check_queue_crash: all checks passed"
