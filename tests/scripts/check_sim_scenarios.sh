#!/usr/bin/env bash
# ctest-timeout: 240
# Every scenario file shipped in scenarios/ (compiled into ravel) runs, for one
# seed, twice with the same trace hash, and ends as its `expect` line says:
# exit 0 for `pass`, exit 1 (a violation) for `violation`. The incident's
# violation comes with ravel unravel's diagnosis of the simulated world naming
# the cycle.  The incident-fix-* files run in check_sim_fixes.sh and the sweeps
# of the all-fixes scenarios in check_sim_sweeps.sh, so the long parts run side
# by side.
# Usage: check_sim_scenarios.sh <source dir> <build dir>
set -uo pipefail
src=${1:?usage: check_sim_scenarios.sh <source dir> <build dir>}
build=${2:?usage: check_sim_scenarios.sh <source dir> <build dir>}
bin="$build/ravel"
fail() { echo "FAIL: $*" >&2; exit 1; }

. "$(dirname "$0")/sim_lib.sh"
n=0
for f in "$src"/scenarios/*.sim; do
  name=$(basename "$f" .sim)
  case "$name" in incident-fix-*) n=$((n + 1)); continue ;; esac # check_sim_fixes.sh
  check_scenario "$name"
  n=$((n + 1))
done
[ "$n" -ge 10 ] || fail "only $n scenario files found in $src/scenarios"

# A file given by its path runs too, and errors name the file and line.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'kind locks\nclients 2\nthreads 1\nvirtual-seconds 10\nmin-acquisitions 1\n' >"$tmp/mine.sim"
"$bin" sim "$tmp/mine.sim" >/dev/null || fail "a scenario file given by its path did not pass"
printf 'kind locks\nclient 2\n' >"$tmp/bad.sim"
err=$("$bin" sim "$tmp/bad.sim" 2>&1); rc=$?
[ "$rc" = 2 ] && grep -q "bad.sim:2: unknown key 'client' for kind locks" <<<"$err" ||
  fail "a bad key: exit $rc, '$err'"
echo "ok: scenario files by path; errors name file and line"
