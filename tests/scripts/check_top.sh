#!/usr/bin/env bash
# `ravel top` finds the replicas through coord's sessions and shows one row per
# replica with its consumption, plus the queue's channel and coord's locks.
# Usage: check_top.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_top.sh <source dir> <build dir>}
bin="$build/ravel"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ravel-top.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for f in "$tmp"/*.err; do [ -f "$f" ] && tail -n 5 "$f" >&2; done; exit 1; }

# wait_line FILE PATTERN: bounded wait (10 s) for a line in a process's output.
wait_line() {
  for _ in $(seq 1 200); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}

started=0
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  p1=$(shuf -i 20000-29999 -n 1); p2=$(shuf -i 30000-39999 -n 1)
  p3=$(shuf -i 40000-49999 -n 1); p4=$(shuf -i 50000-59999 -n 1)
  "$bin" up --data "$tmp/data" --coord-port "$p1" --coord-admin-port "$p2" \
    --tcp-port "$p3" --http-port "$p4" --log-level warn >"$tmp/up.out" 2>"$tmp/up.err" &
  pid=$!
  if wait_line "$tmp/up.out" '^ravel up:'; then started=1; pids+=("$pid"); break; fi
  kill -KILL "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  grep -q 'in use' "$tmp/up.err" || fail "ravel up did not start"
done
[ $started = 1 ] || fail "ravel up did not start on free ports"
for r in 1 2; do
  "$bin" svc --replica "$r" --coord "127.0.0.1:$p1" --queue "127.0.0.1:$p3" \
    >"$tmp/svc$r.out" 2>"$tmp/svc$r.err" &
  pids+=("$!")
  wait_line "$tmp/svc$r.out" "^svc: replica $r " || fail "svc replica $r did not start"
done
for i in $(seq 1 20); do
  curl -s -d "acct-$((i % 4)) a b" "http://127.0.0.1:$p4/pub?topic=events" >/dev/null || fail "publish"
done
out=$("$bin" top --coord "127.0.0.1:$p1" --queue-http "127.0.0.1:$p4" --iterations 2 --interval 200) \
  || fail "ravel top failed"
echo "$out" | tail -n 9
grep -q '^billing/1 ' <<<"$out" || fail "no row for replica 1"
grep -q '^billing/2 ' <<<"$out" || fail "no row for replica 2"
grep -q '^queue events/svc: ' <<<"$out" || fail "no queue line"
grep -q '^coord: ' <<<"$out" || fail "no coord line"
echo "ravel top: one row per replica, the queue's channel and coord's locks"
