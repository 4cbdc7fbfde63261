#!/usr/bin/env bash
# ctest-timeout: 150
# `ravel grab` captures a live system's evidence into one archive, within its bound.
#  1. A live deadlocked `ravel demo --incident`: the archive unpacks with tar, its
#     manifest lists the 3 replicas, coord and the queue; a replica's dump names
#     the DEADLOCK on client-cache; coord's lock table shows a held lock with waiters.
#  2. A replica that does not answer (SIGSTOPped): grab ends within --bound-ms,
#     marks it not answered and takes its stacks from outside (gdb/eu-stack);
#     also when it is named by --target URL only (its pid found from its port).
#  3. --then runs after the capture and grab exits with its status.
# Usage: check_grab.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_grab.sh <source dir> <build dir>}
bin="$build/ravel"
. "$(dirname "$0")/lib.sh"
lib_init grab
svc=""
trap 'if [ -n "$svc" ]; then kill -CONT "$svc" 2>/dev/null; fi; lib_cleanup' EXIT
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
# manifest DIR PYTHON-EXPR...: evaluate assertions on DIR/manifest.json (m) in python
check_py() {
  python3 - "$@" <<'PY' || exit 1
import json, os, sys
root = sys.argv[1]
m = json.load(open(os.path.join(root, "manifest.json")))
procs = {p["dir"]: p for p in m["processes"]}
for expr in sys.argv[2:]:
    if not eval(expr):
        print("FAIL: assertion failed: %s\nmanifest: %s" % (expr, json.dumps(m, indent=1)[:4000]), file=sys.stderr)
        sys.exit(1)
PY
}

# ---- 1. a live deadlocked demo -------------------------------------------------------------------
start_demo demo --incident --duration 30 --config-at 2 --config-writes 10
wait_deadlock || fail "no replica of the demo deadlocked"
contended=0   # and until others queue for a distributed lock (<= 30 s)
for _ in $(seq 1 300); do
  [ -n "$(redis-cli -p "$cport" LOCK.LIST CONTENDED 2>/dev/null)" ] && { contended=1; break; }
  sleep 0.1
done
[ $contended = 1 ] || fail "no distributed lock got waiters behind the deadlock"
t0=$(now_ms)
"$bin" grab --coord "127.0.0.1:$cport" --coord-admin "$caport" --queue "127.0.0.1:$qhttp" \
  --out "$tmp/live.tar.gz" >"$tmp/grab1.out" 2>"$tmp/grab1.err"
rc=$?
t1=$(now_ms)
cat "$tmp/grab1.out"
[ $rc = 0 ] || [ $rc = 1 ] || fail "ravel grab on the live demo exited $rc"
[ -s "$tmp/live.tar.gz" ] || fail "no archive written"
mkdir "$tmp/live" && tar xzf "$tmp/live.tar.gz" -C "$tmp/live" || fail "tar xzf failed on the archive"
root="$tmp/live/live"
[ -f "$root/manifest.json" ] || fail "the archive has no live/manifest.json (entries under the collection's base name)"
check_py "$root" \
  'm["format"] == "ravel-grab/1"' \
  'sorted(p["dir"] for p in m["processes"] if p["kind"] == "service") == ["billing-1", "billing-2", "billing-3"]' \
  'procs["coord"]["kind"] == "coord" and procs["coord"]["answered"]' \
  'procs["queue"]["kind"] == "queue" and "stats.json" in procs["queue"]["files"]' \
  'all(procs[d]["answered"] and "threads.txt" in procs[d]["files"] for d in ("billing-1", "billing-2", "billing-3"))' \
  'all(isinstance(procs[d]["pid"], int) and procs[d]["session"] for d in ("billing-1", "billing-2", "billing-3"))' \
  'all(os.path.exists(os.path.join(root, p["dir"], f)) for p in m["processes"] for f in p["files"])' \
  'm["elapsed_ms"] <= m["bound_ms"]'
dl=0
for d in billing-1 billing-2 billing-3; do
  if grep -q '^DEADLOCK' "$root/$d/threads.txt" && grep -q 'client-cache' "$root/$d/threads.txt"; then dl=1; fi
done
[ $dl = 1 ] || fail "no replica's threads.txt in the archive names the DEADLOCK on client-cache"
python3 - "$root/coord/lock-table.json" <<'PY' || fail "lock-table.json shows no held lock with waiters"
import json, sys
locks = json.load(open(sys.argv[1]))
assert isinstance(locks, list) and locks, "no locks"
assert any(l.get("held") and l.get("waiter_count", 0) > 0 and l.get("waiters") and l["waiters"][0].get("session")
           for l in locks), "no held lock with waiters"
PY
for f in sessions.json audit.json config-billing.json; do
  python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$root/coord/$f" || fail "coord/$f is not JSON"
done
ls "$root"/coord/session-*.json >/dev/null 2>&1 || fail "no coord/session-ID.json"
[ -s "$root/billing-1/proc.json" ] || fail "no proc.json for a local replica"
echo "live demo: grab took $((t1 - t0)) ms (manifest elapsed $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["elapsed_ms"])' "$root/manifest.json") ms), 3 replicas + coord + queue, DEADLOCK on client-cache captured"
stop_demo

# ---- 2. a replica that does not answer -------------------------------------------------------------
start_up --sync none
start_svc 1
kill -STOP "$svc"
t0=$(now_ms)
"$bin" grab --coord "127.0.0.1:$cport" --coord-admin "$caport" --queue "127.0.0.1:$hport" \
  --bound-ms 5000 --dir "$tmp/stopped" >"$tmp/grab2.out" 2>"$tmp/grab2.err"
rc=$?
t1=$(now_ms)
cat "$tmp/grab2.out"
[ $rc = 1 ] || fail "grab with a stopped replica exited $rc, expected 1 (parts failed)"
(( t1 - t0 <= 8000 )) || fail "grab with --bound-ms 5000 took $((t1 - t0)) ms"
check_py "$tmp/stopped" \
  'procs["billing-1"]["answered"] is False' \
  'procs["billing-1"]["stacks_from_outside"] is True and "stacks.txt" in procs["billing-1"]["files"]' \
  'any(f["what"] == "threads.txt" for f in procs["billing-1"]["failed"])' \
  '"proc.json" in procs["billing-1"]["files"]' \
  'procs["coord"]["answered"] and procs["queue"]["answered"]' \
  'm["elapsed_ms"] <= 5000'
grep -q '^#[0-9]' "$tmp/stopped/billing-1/stacks.txt" || fail "stacks.txt has no frames"
grep -Eq 'rv_|main' "$tmp/stopped/billing-1/stacks.txt" || fail "stacks.txt has no symbol names"
python3 -c 'import json,sys; s=json.load(open(sys.argv[1]))["state"]; sys.exit(0 if s.startswith("T") else 1)' \
  "$tmp/stopped/billing-1/proc.json" || fail "proc.json does not show the replica stopped"
echo "stopped replica: grab ended in $((t1 - t0)) ms (bound 5000), not answered, stacks from outside"

# The same replica named only by its admin URL: its pid is found from the listening port.
t0=$(now_ms)
"$bin" grab --coord none --queue none --target "http://127.0.0.1:$aport/" --bound-ms 3000 \
  --out "$tmp/target.tar.gz" >"$tmp/grab3.out" 2>"$tmp/grab3.err"
rc=$?
t1=$(now_ms)
[ $rc = 1 ] || fail "grab --target (stopped) exited $rc, expected 1"
(( t1 - t0 <= 6000 )) || fail "grab with --bound-ms 3000 took $((t1 - t0)) ms"
mkdir "$tmp/target" && tar xzf "$tmp/target.tar.gz" -C "$tmp/target" || fail "tar xzf (target)"
check_py "$tmp/target/target" \
  'procs["target-1"]["kind"] == "target" and procs["target-1"]["pid"] == '"$svc" \
  'procs["target-1"]["stacks_from_outside"] is True'
kill -CONT "$svc"
echo "--target URL: pid $svc found from port $aport, stacks taken"

# ---- 3. --then -------------------------------------------------------------------------------------
"$bin" grab --coord "127.0.0.1:$cport" --coord-admin "$caport" --queue "127.0.0.1:$hport" \
  --bound-ms 3000 --quiet --out "$tmp/then.tar.gz" --then "echo restarted > '$tmp/then.txt'; exit 7" \
  >"$tmp/grab4.out" 2>"$tmp/grab4.err"
rc=$?
[ $rc = 7 ] || fail "grab --then exited $rc, expected the command's status 7"
[ "$(cat "$tmp/then.txt" 2>/dev/null)" = restarted ] || fail "--then did not run"
[ -s "$tmp/then.tar.gz" ] || fail "--then ran but no archive was written first"
"$bin" grab --coord "127.0.0.1:$cport" --coord-admin "$caport" --queue "127.0.0.1:$hport" \
  --bound-ms 3000 --quiet --out "$tmp/then2.tar.gz" --then true >/dev/null 2>&1 ||
  fail "grab --then true did not exit 0"
"$bin" grab --bogus >/dev/null 2>&1; [ $? = 2 ] || fail "bad usage did not exit 2"
"$bin" grab --help | grep -q -- '--then' || fail "--help does not document --then"
echo "--then: ran after the capture; grab exited with its status"

stop_pid "$svc" 10; svc=""
stop_pid "$up" 10
echo "ravel grab: live capture, stopped process within the bound, --then: all passed"
