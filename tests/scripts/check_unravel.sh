#!/usr/bin/env bash
# ctest-timeout: 170
# `ravel unravel` on a live incident: the demo --incident deadlocks a replica
# on its client cache; unravel (live) must name that cycle and the replicas
# blocked on the distributed lock, exit 1; `ravel grab` to an archive and
# `ravel unravel ARCHIVE` must find the same cycles.  A healthy system
# (`ravel demo` with every fix) must come out healthy, exit 0.
# Usage: check_unravel.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_unravel.sh <source dir> <build dir>}
bin="$build/ravel"
. "$(dirname "$0")/lib.sh"
lib_init unravel
live_args() { echo --coord "127.0.0.1:$cport" --coord-admin "$caport" --queue "127.0.0.1:$qhttp"; }

# ---- the incident -------------------------------------------------------------------------
start_demo incident --incident --duration 120 --config-at 2 --config-writes 10
wait_deadlock || fail "no replica deadlocked within 60 s"
deadlocked="http://127.0.0.1:$deadlocked_port/"
echo "a replica deadlocked ($deadlocked); waiting for the others to pile up on its distributed lock"

# Live: exit 1, the deadlock on the client cache and the replicas blocked on the dlock.
ok=
for _ in $(seq 1 30); do
  out=$(timeout 30 "$bin" unravel $(live_args)); rc=$?
  [ $rc = 1 ] || fail "ravel unravel (live) exited $rc, expected 1: $out"
  if grep -q 'wait for the distributed lock ".*" held by .* (in the deadlock)' <<<"$out"; then ok=1; break; fi
  sleep 0.5
done
echo "$out" | sed -n '/^DEADLOCK 1/,/^$/p'
[ -n "$ok" ] || fail "no thread blocked on a distributed lock held by the deadlocked thread: $out"
grep -q '^DEADLOCK 1: 2 threads in a cycle on billing/' <<<"$out" || fail "no DEADLOCK 1 line"
grep -q 'holds the read lock on "client-cache"' <<<"$out" || fail "the read lock on the client cache is not named"
grep -q 'waits to read-lock "client-cache" again' <<<"$out" || fail "the second read lock is not named"
grep -q 'which waits for .* to release its read lock: a deadlock' <<<"$out" || fail "the writer's wait is not named"
grep -q 'and the distributed lock on "acct-' <<<"$out" || fail "the distributed lock held is not named"
grep -q 'messages are in flight on them' <<<"$out" || fail "the queue's in-flight messages are not named"
grep -q '^VERDICT: UNHEALTHY' <<<"$out" || fail "no UNHEALTHY verdict"
grep -q 'stood across two captures 300 ms apart' <<<"$out" || fail "the deadlock was not confirmed by a second capture"

# The same diagnosis from an archive: grab, then live again, then the archive.
"$bin" grab $(live_args) --out "$tmp/incident.tar.gz" --quiet; rc=$?
[ $rc = 0 ] || fail "ravel grab exited $rc"
"$bin" unravel $(live_args) --json >"$tmp/live.json"; rc=$?
[ $rc = 1 ] || fail "ravel unravel --json (live) exited $rc"
grep -q '"confirmed_after_ms": 300' "$tmp/live.json" || fail "no confirmed_after_ms in the live JSON"
"$bin" unravel "$tmp/incident.tar.gz" --json --report "$tmp/report.html" >"$tmp/archive.json"; rc=$?
[ $rc = 1 ] || fail "ravel unravel ARCHIVE exited $rc, expected 1"
[ -s "$tmp/report.html" ] || fail "no HTML report written"
"$bin" unravel "$tmp/incident.tar.gz" >/dev/null; rc=$?
[ $rc = 1 ] || fail "ravel unravel ARCHIVE (text) exited $rc"
python3 - "$tmp/archive.json" "$tmp/live.json" <<'EOF' || fail "the archive's and the live diagnosis differ"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
def cycles(r):
    return {tuple(sorted(t["id"] for t in c["threads"])): set(c.get("blocked_by_group", {}))
            for c in r["cycles"]}
ca, cb = cycles(a), cycles(b)
# Deadlocks are permanent: every cycle of the earlier capture (the archive) is in the later one,
# with the same replicas blocked behind it (or more, as the pile-up grows).
assert ca, "no cycle in the archive"
for k, groups in ca.items():
    assert k in cb, "cycle %s of the archive is not in the live diagnosis %s" % (k, list(cb))
    assert groups <= cb[k], "blocked replicas differ for %s: %s vs %s" % (k, groups, cb[k])
print("archive and live agree: %d cycle(s): %s" % (len(ca), "; ".join(" <-> ".join(k) for k in ca)))
EOF
stop_demo

# ---- a healthy system ---------------------------------------------------------------------------
start_demo healthy --duration 120
sleep 2
out=$(timeout 30 "$bin" unravel $(live_args)); rc=$?
echo "$out" | tail -n 3
[ $rc = 0 ] || fail "ravel unravel on a healthy system exited $rc, expected 0: $out"
grep -q '^VERDICT: HEALTHY' <<<"$out" || fail "no HEALTHY verdict"
stop_demo

# ---- nothing to collect: exit 2 -----------------------------------------------------------
"$bin" unravel "$tmp/does-not-exist.tar.gz" >/dev/null 2>&1; rc=$?
[ $rc = 2 ] || fail "ravel unravel on a missing archive exited $rc, expected 2"
echo "ravel unravel: names the incident's deadlock live and from its archive; healthy when healthy"
