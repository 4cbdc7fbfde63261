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

out=$(timeout 100 "$bin" demo --quiet --duration 6 --config-at 2); rc=$?
echo "$out" | sed -n '/=== summary ===/,$p'
[ $rc = 0 ] || fail "ravel demo (every fix on) exited $rc, expected 0 (healthy)"
grep -q '^verdict: HEALTHY' <<<"$out" || fail "no HEALTHY verdict"
grep -q 'DEADLOCKED' <<<"$out" && fail "a replica deadlocked with every fix on"

out=$(timeout 100 "$bin" demo --incident --quiet --duration 10 --config-at 2 --config-writes 10); rc=$?
echo "$out" | sed -n '/=== summary ===/,$p'
[ $rc = 1 ] || fail "ravel demo --incident exited $rc, expected 1 (unhealthy)"
grep -q 'DEADLOCKED' <<<"$out" || fail "no replica deadlocked in --incident mode"
grep -q '^verdict: UNHEALTHY' <<<"$out" || fail "no UNHEALTHY verdict"
echo "ravel demo: healthy with the fixes, deadlocked with --incident"
