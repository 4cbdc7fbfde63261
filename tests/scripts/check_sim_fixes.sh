#!/usr/bin/env bash
# ctest-timeout: 400
# The incident with each single fix (scenarios/incident-fix-*.sim): each runs for
# seed 1, twice with the same trace hash, and ends as its `expect` line says
# (INCIDENT.md: which fix alone is enough).  The longest scenario runs of the
# suite (10 virtual minutes each), so a test of their own.
# Usage: check_sim_fixes.sh <source dir> <build dir>
set -uo pipefail
src=${1:?usage: check_sim_fixes.sh <source dir> <build dir>}
build=${2:?usage: check_sim_fixes.sh <source dir> <build dir>}
bin="$build/ravel"
fail() { echo "FAIL: $*" >&2; exit 1; }
. "$(dirname "$0")/sim_lib.sh"

n=0
for f in "$src"/scenarios/incident-fix-*.sim; do
  check_scenario "$(basename "$f" .sim)"
  n=$((n + 1))
done
[ "$n" -ge 5 ] || fail "only $n incident-fix scenario files in $src/scenarios (one per cause)"
