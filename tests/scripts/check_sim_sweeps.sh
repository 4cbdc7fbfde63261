#!/usr/bin/env bash
# ctest-timeout: 300
# The all-fixes scenarios pass every property across a sweep of seeds, each seed
# run twice with the same trace hash (a test of its own beside
# check_sim_scenarios.sh, so that the two long halves run side by side).
# Usage: check_sim_sweeps.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_sim_sweeps.sh <source dir> <build dir>}
bin="$build/ravel"
fail() { echo "FAIL: $*" >&2; exit 1; }

# Sanitizer builds run 10-30 times slower: there, sweep fewer seeds.
sweep=8
case "$build" in *asan*|*tsan*) sweep=3 ;; esac

# The sweeps: every fix passes every property, with partitions and under heavy faults.
# all-fixes-faults found five bugs, fixed since (docs/sim.md, "What the simulator found"):
# its seeds 3, 5, 6 and 7 each failed on one of them.
for sc in all-fixes all-fixes-faults; do
  out=$(timeout 300 "$bin" sim "$sc" --seeds "1..$sweep" --check-determinism 2>&1) ||
    { grep -A3 VIOLATION <<<"$out" | head -30; fail "$sc: a seed of 1..$sweep violated a property"; }
  grep -q "summary: $sweep seeds (1..$sweep): $sweep passed, 0 violated" <<<"$out" || fail "$sc: no summary"
  [ "$(grep -c "deterministic: second run gave the same hash" <<<"$out")" = "$sweep" ] || fail "$sc: not deterministic"
  echo "ok: $sc passes every property for seeds 1..$sweep, each run twice with the same hash"
done
