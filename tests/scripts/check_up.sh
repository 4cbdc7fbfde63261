#!/usr/bin/env bash
# `ravel up` runs coord and queue in one process: both answer on their ports,
# and SIGTERM stops the process cleanly (exit 0) with its data kept.
# Usage: check_up.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_up.sh <source dir> <build dir>}
bin="$build/ravel"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ravel-up.XXXXXX")
pid=""
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$tmp/err" ] && tail -n 20 "$tmp/err" >&2; exit 1; }

started=0
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  p1=$(shuf -i 20000-29999 -n 1); p2=$(shuf -i 30000-39999 -n 1)
  p3=$(shuf -i 40000-49999 -n 1); p4=$(shuf -i 50000-59999 -n 1)
  "$bin" up --data "$tmp/data" --coord-port "$p1" --coord-admin-port "$p2" \
    --tcp-port "$p3" --http-port "$p4" >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 1 200); do   # up to 10 s
    grep -q '^ravel up:' "$tmp/out" && { started=1; break; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  [ $started = 1 ] && break
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=""
  grep -q 'in use' "$tmp/err" || fail "ravel up did not start"
done
[ $started = 1 ] || fail "ravel up did not start on free ports after 10 attempts"

[ "$(redis-cli -p "$p1" PING)" = PONG ] || fail "coord does not answer PING on $p1"
sid=$(redis-cli -p "$p1" SESSION.OPEN 10000 SERVICE up-check) || fail "SESSION.OPEN"
[ "$(redis-cli -p "$p1" LOCK.ACQUIRE "$sid" l NOWAIT)" -ge 1 ] || fail "no fencing token"
[ "$(curl -s "http://127.0.0.1:$p4/ping")" = OK ] || fail "queue /ping on $p4"
[ "$(curl -s -d hello "http://127.0.0.1:$p4/pub?topic=up")" = OK ] || fail "queue /pub"
curl -s "http://127.0.0.1:$p4/stats?format=json" | grep -q '"topic_name":"up"' || fail "topic not in /stats"
curl -s "http://127.0.0.1:$p2/healthz" | grep -q ok || fail "coord admin /healthz on $p2"

kill -TERM "$pid"
for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$pid" 2>/dev/null && fail "ravel up did not stop within 10 s of SIGTERM"
wait "$pid"; rc=$?; pid=""
[ $rc = 0 ] || fail "ravel up exited $rc after SIGTERM"
[ -f "$tmp/data/coord/coord.state" ] && [ -d "$tmp/data/queue/topics/up" ] || fail "data not kept under $tmp/data"
echo "ravel up: coord and queue served together; SIGTERM stopped it cleanly with its data kept"
