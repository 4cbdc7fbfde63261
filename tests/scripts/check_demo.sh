#!/usr/bin/env bash
# ctest-timeout: 180
# `ravel demo` replays the incident on real processes.  With every fix on the
# run stays healthy (exit 0); with --incident at least one replica deadlocks on
# the client cache after the platform writes and the run says so (exit 1).
# Usage: check_demo.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_demo.sh <source dir> <build dir>}
bin="$build/ravel"
fail() { echo "FAIL: $*" >&2; exit 1; }

out=$(timeout 100 "$bin" demo --quiet --duration 6 --config-at 2 --no-report); rc=$?
echo "$out" | sed -n '/=== summary ===/,$p'
[ $rc = 0 ] || fail "ravel demo (every fix on) exited $rc, expected 0 (healthy)"
grep -q '^verdict: HEALTHY' <<<"$out" || fail "no HEALTHY verdict"
grep -q 'DEADLOCKED' <<<"$out" && fail "a replica deadlocked with every fix on"

out=$(timeout 100 "$bin" demo --incident --quiet --duration 10 --config-at 2 --config-writes 10 --no-report); rc=$?
echo "$out" | sed -n '/=== summary ===/,$p'
[ $rc = 1 ] || fail "ravel demo --incident exited $rc, expected 1 (unhealthy)"
grep -q 'DEADLOCKED' <<<"$out" || fail "no replica deadlocked in --incident mode"
grep -q '^verdict: UNHEALTHY' <<<"$out" || fail "no UNHEALTHY verdict"
# Nobody cancels and timed-out messages free their slots: handler threads pile
# up past the replicas' RDY (50) behind the deadlocked replica's locks.
piled=$(sed -n 's/^replica .*handled [0-9]*, \([0-9]*\) handler threads.*/\1/p' <<<"$out" | sort -n | tail -1)
[ "${piled:-0}" -gt 60 ] || fail "--incident: handler threads did not pile up past RDY (most: ${piled:-none})"
echo "ravel demo: healthy with the fixes, deadlocked with --incident"

# No replica outlives its demo, even one killed with SIGKILL (it cannot stop them):
# each replica notices its parent is gone and exits (--exit-with-parent).
. "$(dirname "$0")/lib.sh"
lib_init demo-orphans
start_demo orphans --incident --duration 60
kill -KILL "$demo"; wait "$demo" 2>/dev/null
gone=0
for _ in $(seq 1 100); do   # <= 10 s
  alive=0
  for a in "${aports[@]}"; do curl -s --max-time 1 "http://127.0.0.1:$a/healthz" >/dev/null && alive=1; done
  [ $alive = 0 ] && { gone=1; break; }
  sleep 0.1
done
[ $gone = 1 ] || fail "replicas of a SIGKILLed demo are still running"
echo "ravel demo: its replicas do not outlive it, even after SIGKILL"

