#!/usr/bin/env bash
# ctest-timeout: 180
# The incident's "fix" that destroys the evidence: restarting every replica
# clears the deadlock.  Two --incident replicas deadlock after platform writes;
# they are killed (stuck handlers cannot be stopped) and started again, and with
# no more config writes the backlog drains (after their old sessions expire and
# coord releases the distributed locks the stuck handlers held).
# Usage: check_svc_restart.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_svc_restart.sh <source dir> <build dir>}
bin="$build/ravel"
. "$(dirname "$0")/lib.sh"
lib_init svc-restart

start_up
redis-cli -p "$cport" CFG.SET svc/billing upstream.url https://svc AUTHOR test >/dev/null || fail "CFG.SET"

# start_replicas GEN: two --incident replicas; their admin ports in aports[]
start_replicas() {
  aports=(); reps=()
  for r in 1 2; do
    out="$tmp/svc-$1-$r.out"
    "$bin" svc --replica "$r" --coord "127.0.0.1:$cport" --queue "127.0.0.1:$tport" --incident \
      --upstream-latency 200 --msg-timeout 3000 >"$out" 2>"$tmp/svc-$1-$r.err" &
    reps+=("$!"); track "$!"
    wait_line "$out" "^svc: replica $r admin" || fail "replica $r (start $1) did not start"
    aports+=("$(sed -n 's#^svc: replica [0-9]* admin http://127.0.0.1:\([0-9]*\)/.*#\1#p' "$out")")
  done
}
deadlocked() {  # any replica's dump has a cycle
  for a in "${aports[@]}"; do
    curl -s --max-time 3 "http://127.0.0.1:$a/debug/threads" | grep -q '^DEADLOCK' && return 0
  done
  return 1
}

start_replicas 1
seen=0
for i in $(seq 1 150); do   # <= ~30 s: load on one resource, a platform write every 5 ticks
  curl -s -d "acct-1 a b c" "http://127.0.0.1:$hport/pub?topic=events" >/dev/null
  (( i % 5 == 0 )) && redis-cli -p "$cport" CFG.SET platform upstream.url "https://p$i" AUTHOR other-team >/dev/null
  if (( i % 5 == 0 )) && deadlocked; then seen=1; break; fi
  sleep 0.2
done
[ $seen = 1 ] || fail "the --incident replicas did not deadlock"
echo "deadlocked: a replica's dump names the cycle"

# The operator's remedy: restart every replica (SIGKILL: stuck handlers cannot be stopped).
for p in "${reps[@]}"; do kill -KILL "$p"; wait "$p" 2>/dev/null; done
start_replicas 2
drained=0
for i in $(seq 1 300); do   # <= ~60 s: old sessions expire (TTL 10 s), locks free, backlog drains
  stats=$(curl -s --max-time 3 "http://127.0.0.1:$hport/stats?format=json&topic=events")
  left=$(python3 -c 'import json,sys
d=json.loads(sys.stdin.read()); c=d["topics"][0]["channels"][0]
print(c["depth"]+c["in_flight_count"]+c["deferred_count"])' <<<"$stats" 2>/dev/null)
  [ "$left" = 0 ] && { drained=1; break; }
  sleep 0.2
done
[ $drained = 1 ] || fail "the backlog did not drain after restarting every replica (left: $left)"
deadlocked && fail "a restarted replica deadlocked again without any config write"
echo "restarted: the backlog drained and no replica is deadlocked (and the evidence is gone)"
