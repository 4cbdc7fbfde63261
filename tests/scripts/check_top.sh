#!/usr/bin/env bash
# `ravel top` finds the replicas through coord's sessions and shows one row per
# replica with its consumption, plus the queue's channel and coord's locks.
# Usage: check_top.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_top.sh <source dir> <build dir>}
bin="$build/ravel"
. "$(dirname "$0")/lib.sh"
lib_init top

start_up
for r in 1 2; do start_svc "$r"; done
for i in $(seq 1 20); do
  curl -s -d "acct-$((i % 4)) a b" "http://127.0.0.1:$hport/pub?topic=events" >/dev/null || fail "publish"
done
out=$("$bin" top --coord "127.0.0.1:$cport" --queue-http "127.0.0.1:$hport" --iterations 2 --interval 200) \
  || fail "ravel top failed"
echo "$out" | tail -n 9
grep -q '^billing/1 ' <<<"$out" || fail "no row for replica 1"
grep -q '^billing/2 ' <<<"$out" || fail "no row for replica 2"
grep -q '^queue events/svc: ' <<<"$out" || fail "no queue line"
grep -q '^coord: ' <<<"$out" || fail "no coord line"
echo "ravel top: one row per replica, the queue's channel and coord's locks"
