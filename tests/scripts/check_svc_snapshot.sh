#!/usr/bin/env bash
# ctest-timeout: 120
# Periodic snapshots survive what a preStop hook cannot catch: an --incident
# replica deadlocks, keeps writing snapshots (dumps never take an application
# lock), and is then killed with SIGKILL; its newest snapshot still names the
# cycle, every snapshot is whole (the grab process-folder files, valid JSON),
# and only the last --snapshot-keep are kept.
# Usage: check_svc_snapshot.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_svc_snapshot.sh <source dir> <build dir>}
bin="$build/ravel"
. "$(dirname "$0")/lib.sh"
lib_init svc-snapshot

start_up
redis-cli -p "$cport" CFG.SET svc/billing upstream.url https://svc AUTHOR test >/dev/null || fail "CFG.SET"
start_svc 1 --incident --upstream-latency 200 --msg-timeout 3000 \
  --snapshot-dir "$tmp/snap" --snapshot-every 1 --snapshot-keep 3
snaps() { metric "$aport" ravel_svc_snapshots_total; }

deadlocked=0
for i in $(seq 1 150); do   # <= ~30 s: load on one resource, a platform write every 5 ticks
  pub "acct-1 a b c" || fail "publish"
  (( i % 5 == 0 )) && redis-cli -p "$cport" CFG.SET platform upstream.url "https://p$i" AUTHOR other-team >/dev/null
  if (( i % 5 == 0 )) && curl -s --max-time 3 "http://127.0.0.1:$aport/debug/threads" | grep -q '^DEADLOCK'; then
    deadlocked=1; break
  fi
  sleep 0.2
done
[ $deadlocked = 1 ] || fail "the --incident replica did not deadlock"
n0=$(snaps)
for _ in $(seq 1 100); do   # <= 10 s: two more snapshots, both taken while deadlocked
  [ "$(snaps)" -ge $((n0 + 2)) ] 2>/dev/null && break
  sleep 0.1
done
[ "$(snaps)" -ge $((n0 + 2)) ] 2>/dev/null || fail "no snapshot written while deadlocked (had $n0, now $(snaps))"
[ "$(snaps)" -ge 4 ] || fail "fewer than 4 snapshots written: $(snaps)"
kill -KILL "$svc"; wait "$svc" 2>/dev/null

dir="$tmp/snap/billing-1"
mapfile -t all < <(ls -1 "$dir" | sort)
[ ${#all[@]} = 3 ] || fail "expected the last 3 snapshots, found: ${all[*]}"
for s in "${all[@]}"; do
  [[ $s == snap-* && $s != *.tmp ]] || fail "unexpected entry $s (a partial snapshot?)"
  for f in threads.txt threads.json locks.txt metrics.txt history.json; do
    [ -s "$dir/$s/$f" ] || fail "$s/$f missing or empty"
  done
  python3 -c 'import json,sys; [json.load(open(p)) for p in sys.argv[1:]]' \
    "$dir/$s/threads.json" "$dir/$s/history.json" || fail "$s: invalid JSON"
  grep -q '^ravel_svc_messages_total' "$dir/$s/metrics.txt" || fail "$s: metrics.txt has no ravel_svc_ samples"
done
newest="$dir/${all[2]}"
grep -q '^DEADLOCK' "$newest/threads.txt" || fail "the newest snapshot does not name the deadlock"
grep -q 'client-cache' "$newest/threads.txt" || fail "the newest snapshot does not name the client cache"
echo "ravel svc --snapshot-dir: the evidence of a deadlocked replica outlives its SIGKILL (${all[*]})"
