# Shared by check_sim_scenarios.sh and check_sim_fixes.sh; not a test itself.
# Source it after setting src, bin and fail.  check_scenario NAME: the shipped
# scenario file NAME runs for seed 1, twice with the same trace hash, and ends
# as its `expect` line says (exit 0 for `pass`, exit 1 and a VIOLATION line
# for `violation`); the incident's violation must name the cycle.

sim_listed=$("$bin" sim --list) || fail "ravel sim --list failed"

check_scenario() {
  local name=$1 f="$src/scenarios/$1.sim" expect out rc want
  grep -q "^  $name " <<<"$sim_listed" || fail "$name.sim is not compiled in (ravel sim --list)"
  expect=$(sed -n 's/^expect[[:space:]]*\([a-z]*\).*/\1/p' "$f")
  out=$(timeout 300 "$bin" sim "$name" --seed 1 --check-determinism 2>&1)
  rc=$?
  grep -q "deterministic: second run gave the same hash" <<<"$out" || {
    echo "$out" | tail -20; fail "$name: not deterministic (or did not run), exit $rc"; }
  case "$expect" in
    pass) [ "$rc" = 0 ] || { echo "$out" | tail -30; fail "$name: expected every property to hold, exit $rc"; } ;;
    violation)
      [ "$rc" = 1 ] && grep -q "VIOLATION (seed 1" <<<"$out" ||
        { echo "$out" | tail -30; fail "$name: expected a violation, exit $rc"; } ;;
    *) fail "$name: no expect line" ;;
  esac
  echo "ok: $name ($expect): $(sed -n 's/^seed 1: \(virtual [0-9.]* s, wall [0-9.]* s\).*/\1/p' <<<"$out" | head -1)"
  if [ "$name" = incident ]; then
    for want in 'DEADLOCK 1: 2 threads in a cycle on billing/' 'waits to read-lock "client-cache" again' \
                '"coord-watch", which waits to write-lock it' 'holds the distributed lock "acct-'; do
      grep -qF "$want" <<<"$out" || { echo "$out" | head -40; fail "incident: the diagnosis does not say: $want"; }
    done
    echo "ok: incident: the diagnosis names the cycle (handler read lock, coord-watch writer, distributed lock)"
  fi
}
