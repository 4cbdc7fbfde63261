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
