#!/usr/bin/env bash
# ctest-timeout: 150
# A replica serves its per-second history (GET /debug/history, checked against
# `ravel up` + one `ravel svc`), `ravel demo --report FILE` leaves an HTML
# report (src/diag/report.h) behind, and a real browser shows it: runs the
# incident demo (exit 1, unhealthy, is
# expected), then checks the file (one line per replica in each of the six
# charts, every line with points from the replicas' GET /debug/history, a
# marker per platform write, the diagnosis, nothing fetched from a network),
# then opens it in headless Chromium: the DOM it parsed has the same series,
# the console shows no error (an invalid SVG attribute would be one), and a
# screenshot is saved as BUILD/report-screenshot.png (path printed).
# Chromium is required (scripts/bootstrap installs the Debian package
# chromium); without it the check fails, it does not skip.
# Usage: check_report.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_report.sh <source dir> <build dir>}
bin="$build/ravel"
. "$(dirname "$0")/lib.sh"
lib_init report

chromium=${CHROMIUM:-}
if [ -z "$chromium" ]; then
  for c in /usr/bin/chromium chromium chromium-browser; do
    if command -v "$c" >/dev/null 2>&1; then chromium=$(command -v "$c"); break; fi
  done
fi
[ -n "$chromium" ] && [ -x "$chromium" ] ||
  fail "chromium not found: this check needs a headless browser (install the Debian package chromium: scripts/bootstrap)"
[ -x "$bin" ] || fail "$bin not built: run ninja -C $build ravel"

out="$build/report-check"
rm -rf "$out"
mkdir -p "$out" || fail "cannot create $out"
out=$(realpath "$out")                    # chromium needs absolute file:// URLs
html="$out/report.html"
shot="$(realpath "$build")/report-screenshot.png"
rm -f "$shot"
profile="$tmp/chromium-profile"

# ---- one replica's GET /debug/history -------------------------------------------------------
start_up
start_svc 1 --upstream-latency 1
for i in 1 2 3 4 5; do pub "acct-$i a b" || fail "publish $i"; done
# check_history: exit 0 when stdin is the documented JSON with >= 3 samples, else say why.
check_history() {
  python3 -c '
import json, sys, time
h = json.load(sys.stdin)
keys = {"t_ms", "rate", "handler_threads", "cache_waiters", "dlock_waits", "in_flight", "held",
        "timeouts", "late_fins", "rebuilds"}
s = h.get("samples", [])
assert h.get("service") == "billing" and h.get("replica") == "1", "service/replica"
assert h.get("interval_ms") == 1000, "interval_ms"
assert len(s) >= 3, "fewer than 3 samples"
assert all(set(x) == keys for x in s), "sample fields"
t = [x["t_ms"] for x in s]
assert t == sorted(t), "samples not oldest first"
assert abs(t[-1] - time.time() * 1000) < 10000, "t_ms is not unix ms now"
assert sum(x["rate"] for x in s) > 0, "no rate while events were handled"
print(len(s), "samples, the last", json.dumps(s[-1]))
' 2>&1
}
hist=""
for _ in $(seq 1 100); do  # <= 10 s: a sample a second
  hist=$(curl -s --max-time 5 "http://127.0.0.1:$aport/debug/history")
  res=$(check_history <<<"$hist") && break
  sleep 0.1
done
check_history <<<"$hist" >/dev/null || fail "GET /debug/history is not as documented ($(tail -n 1 <<<"$res")): $hist"
echo "ok: GET /debug/history: $res"
stop_pid "$svc" 10
stop_pid "$up" 10

# ---- the demo writes the report -------------------------------------------------------------
timeout 120 "$bin" demo --incident --quiet --duration 10 --config-at 2 --config-writes 10 \
  --data "$out/data" --report "$html" >"$out/demo.out" 2>"$out/demo.err"
rc=$?
sed -n '/=== summary ===/,$p' "$out/demo.out"
[ $rc = 1 ] || { tail -n 20 "$out/demo.err" >&2; fail "ravel demo --incident exited $rc, expected 1 (unhealthy)"; }
# (in a sanitizer build) the demo and its replicas, which served GET /debug/history, ran clean
san=$(grep -lE 'AddressSanitizer|runtime error|LeakSanitizer' "$out/demo.err" "$out"/data/replica-*.log 2>/dev/null || true)
[ -z "$san" ] || { grep -hE 'AddressSanitizer|runtime error' $san | head -n 5 >&2; fail "sanitizer reports in: $san"; }
[ -s "$html" ] || fail "no report at $html"
grep -qx "report: $(realpath "$html")" "$out/demo.out" || fail "the summary does not end with 'report: $(realpath "$html")'"

# ---- the file ---------------------------------------------------------------------------------
count() { grep -o -- "$1" "$2" | wc -l; }
check_series() { # FILE WHAT: 6 charts x 3 replicas, each replica in every chart
  local f=$1 what=$2 n r
  n=$(count '<svg class="chart"' "$f")
  [ "$n" = 6 ] || fail "$what: $n charts, expected 6"
  n=$(count 'class="series"' "$f")
  [ "$n" = 18 ] || fail "$what: $n series paths, expected 18 (3 replicas x 6 charts)"
  for r in 1 2 3; do
    n=$(count "class=\"series\" data-replica=\"billing/$r\"" "$f")
    [ "$n" = 6 ] || fail "$what: replica billing/$r has $n series paths, expected one per chart (6)"
  done
}
check_series "$html" "report file"
n=$(grep -o '<path class="series" data-replica="[^"]*" stroke="[^"]*"\( stroke-dasharray="[^"]*"\)\? d="M' "$html" | wc -l)
[ "$n" = 18 ] || fail "only $n of 18 series have points: a replica's GET /debug/history gave no samples"
n=$(count '<line class="marker" data-label="platform write [0-9]* of upstream.url"' "$html")
[ "$n" = 60 ] || fail "$n marker lines, expected 60 (10 platform writes x 6 charts)"
grep -q '<section id="diagnosis" class="unhealthy">' "$html" || fail "no unhealthy diagnosis section"
grep -q 'DEADLOCKED' "$html" || fail "the diagnosis does not name the deadlocked replica"
grep -q '<script' "$html" && fail "the report has a script"
ext=$(grep -oE '(src|href)="[^"]*"' "$html" | grep -vE '(src|href)="(data:|#)' || true)
[ -z "$ext" ] || fail "the report fetches something at view time: $ext"

# ---- a real browser -------------------------------------------------------------------------
# No network (every host name fails to resolve); console messages go to stderr.
chrome() {
  timeout -k 5 60 "$chromium" --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-extensions --disable-background-networking --disable-sync --disable-component-update \
    --host-resolver-rules="MAP * ~NOTFOUND" --user-data-dir="$profile" \
    --enable-logging=stderr --v=0 "$@"
}
chrome --dump-dom "file://$html" >"$out/dom.html" 2>"$out/chromium-dom.log" ||
  { tail -n 20 "$out/chromium-dom.log" >&2; fail "chromium --dump-dom failed"; }
check_series "$out/dom.html" "the DOM chromium parsed"
grep -q '</html>' "$out/dom.html" || fail "chromium's DOM is incomplete"
chrome --screenshot="$shot" --window-size=1400,2600 --hide-scrollbars "file://$html" \
  >"$out/chromium-shot.out" 2>"$out/chromium-shot.log" ||
  { tail -n 20 "$out/chromium-shot.log" >&2; fail "chromium --screenshot failed"; }
[ -s "$shot" ] || fail "chromium wrote no screenshot at $shot"
[ "$(head -c 8 "$shot" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ] || fail "$shot is not a PNG"
errors=$(cat "$out/chromium-dom.log" "$out/chromium-shot.log" | grep -E ':CONSOLE' || true)
[ -z "$errors" ] || { echo "$errors" >&2; fail "the page logged to the browser console"; }

echo "report: $html"
echo "screenshot: $shot"
echo "check_report: the demo's report shows 3 replicas in each of 6 charts, 10 markers, the diagnosis; chromium renders it without console messages"
