#!/usr/bin/env bash
# The example in docs/libravel.md (docs/examples/handler.c) runs against a real
# `ravel up`: it publishes events, handles each under a distributed lock with a
# config-driven client cache, and exits 0 once every event is finished.
# Usage: check_libravel_example.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_libravel_example.sh <source dir> <build dir>}
bin="$build/ravel"
example="$build/tests/example_handler"
[ -x "$example" ] || { echo "FAIL: $example not built"; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ravel-example.XXXXXX")
pid=""
cleanup() { [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$tmp/err" ] && tail -n 20 "$tmp/err" >&2; exit 1; }

started=0
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  p1=$(shuf -i 20000-29999 -n 1); p2=$(shuf -i 30000-39999 -n 1)
  p3=$(shuf -i 40000-49999 -n 1); p4=$(shuf -i 50000-59999 -n 1)
  "$bin" up --data "$tmp/data" --coord-port "$p1" --coord-admin-port "$p2" \
    --tcp-port "$p3" --http-port "$p4" --log-level warn >"$tmp/out" 2>"$tmp/err" &
  pid=$!
  for _ in $(seq 1 200); do
    grep -q '^ravel up:' "$tmp/out" && { started=1; break; }
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  [ $started = 1 ] && break
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=""
  grep -q 'in use' "$tmp/err" || fail "ravel up did not start"
done
[ $started = 1 ] || fail "ravel up did not start on free ports"
redis-cli -p "$p1" CFG.SET platform upstream.url https://api.example AUTHOR test >/dev/null || fail "CFG.SET"
out=$(timeout 90 "$example" "$p1" "$p3" 30) || fail "the example failed: $out"
echo "$out"
grep -q "handled 30 of 30 events" <<<"$out" || fail "unexpected output: $out"
kill -TERM "$pid"; wait "$pid"; pid=""
