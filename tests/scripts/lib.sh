# Shared by the whole-system checks (tests/scripts/check_*.sh); not a test itself.
# Source it after `set -uo pipefail` and setting `bin` (the ravel binary):
#   . "$(dirname "$0")/lib.sh"; lib_init NAME
# It gives: $tmp (removed at exit), track PID (killed at exit if still running),
# fail MSG, wait_line FILE REGEX [TRIES], start_up [ARGS] (sets cport caport
# tport hport up), start_svc R [ARGS] (sets aport svc), stop_pid PID SECONDS
# (sets rc), metric PORT NAME, pub BODY.  Every wait is bounded; nothing decides
# an outcome by sleeping.

lib_pids=()
lib_init() {
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/ravel-$1.XXXXXX")
  trap lib_cleanup EXIT
}
lib_cleanup() {
  for p in "${lib_pids[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  rm -rf "$tmp"
}
track() { lib_pids+=("$1"); }
fail() {
  echo "FAIL: $*" >&2
  for f in "$tmp"/*.err; do [ -s "$f" ] && { echo "--- $f" >&2; tail -n 10 "$f" >&2; }; done
  exit 1
}
# wait_line FILE REGEX [TRIES]: poll every 50 ms (default 200 tries: 10 s).
wait_line() {
  for _ in $(seq 1 "${3:-200}"); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.05; done
  return 1
}

# start_up [ARGS]: `ravel up` on free ports (retried when a port is taken).
start_up() {
  local attempt
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    cport=$(shuf -i 20000-29999 -n 1); caport=$(shuf -i 30000-39999 -n 1)
    tport=$(shuf -i 40000-49999 -n 1); hport=$(shuf -i 50000-59999 -n 1)
    : >"$tmp/up.out"
    "$bin" up --data "$tmp/data" --coord-port "$cport" --coord-admin-port "$caport" \
      --tcp-port "$tport" --http-port "$hport" --log-level warn "$@" >"$tmp/up.out" 2>"$tmp/up.err" &
    up=$!
    if wait_line "$tmp/up.out" '^ravel up:'; then track "$up"; return 0; fi
    kill -KILL "$up" 2>/dev/null; wait "$up" 2>/dev/null
    grep -q 'in use' "$tmp/up.err" || fail "ravel up did not start"
  done
  fail "ravel up did not start on free ports after 10 attempts"
}

# restart_up [ARGS]: stop `ravel up` (SIGTERM) and start it again on the same ports and data.
restart_up() {
  stop_pid "$up" 10
  : >"$tmp/up.out"
  "$bin" up --data "$tmp/data" --coord-port "$cport" --coord-admin-port "$caport" \
    --tcp-port "$tport" --http-port "$hport" --log-level warn "$@" >"$tmp/up.out" 2>>"$tmp/up.err" &
  up=$!
  track "$up"
  wait_line "$tmp/up.out" '^ravel up:' || fail "ravel up did not restart on its ports"
}

# start_svc R [ARGS]: replica R against the running `ravel up`; sets svc and aport.
start_svc() {
  local r=$1; shift
  local out="$tmp/svc-$r.out"
  : >"$out"
  "$bin" svc --replica "$r" --coord "127.0.0.1:$cport" --queue "127.0.0.1:$tport" "$@" \
    >"$out" 2>"$tmp/svc-$r.err" &
  svc=$!
  track "$svc"
  wait_line "$out" "^svc: replica $r admin http://127.0.0.1:[0-9]*/" || fail "replica $r did not start"
  aport=$(sed -n 's#^svc: replica [0-9]* admin http://127.0.0.1:\([0-9]*\)/.*#\1#p' "$out")
}

# stop_pid PID SECONDS: SIGTERM, wait up to SECONDS; rc gets the exit status.
stop_pid() {
  kill -TERM "$1" 2>/dev/null
  for _ in $(seq 1 $(($2 * 20))); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$1" 2>/dev/null && fail "process $1 did not stop within $2 s of SIGTERM"
  wait "$1"; rc=$?
}

# metric PORT NAME: the first sample of NAME on http://127.0.0.1:PORT/metrics (empty if absent).
metric() {
  curl -s --max-time 5 "http://127.0.0.1:$1/metrics" |
    awk -v n="$2" '$1 ~ "^"n"([{]|$)" { print $2; exit }'
}

# pub BODY: publish one event on topic "events" through the queue's HTTP API.
pub() { [ "$(curl -s -d "$1" "http://127.0.0.1:$hport/pub?topic=events")" = OK ]; }

# start_demo NAME [ARGS]: `ravel demo --quiet` in the background with data in $tmp/NAME;
# waits for its replicas; sets demo (pid), cport, caport, qhttp and aports (replica admin ports).
start_demo() {
  local name=$1; shift
  "$bin" demo --quiet --no-report --data "$tmp/$name" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
  demo=$!
  track "$demo"
  wait_line "$tmp/$name.out" '^ravel demo: coord 127.0.0.1:[0-9]* (admin [0-9]*), queue' 400 ||
    fail "the demo ($name) did not print where coord and queue listen"
  local line
  line=$(grep -m1 '^ravel demo: coord ' "$tmp/$name.out")
  cport=$(sed 's/.*coord 127.0.0.1:\([0-9]*\) .*/\1/' <<<"$line")
  caport=$(sed 's/.*(admin \([0-9]*\)).*/\1/' <<<"$line")
  qhttp=$(sed 's/.*(HTTP \([0-9]*\)).*/\1/' <<<"$line")
  aports=()
  local r
  for r in $(seq 1 "${DEMO_REPLICAS:-3}"); do
    wait_line "$tmp/$name/replica-$r.log" "^svc: replica $r admin http://" 400 ||
      fail "replica $r of the demo ($name) did not start"
    aports+=("$(sed -n 's#^svc: replica [0-9]* admin http://127.0.0.1:\([0-9]*\)/.*#\1#p' "$tmp/$name/replica-$r.log")")
  done
}

# wait_deadlock [TRIES]: poll (every 0.1 s, default 600 tries) until a replica's dump
# names a DEADLOCK; sets deadlocked_port.
wait_deadlock() {
  local a
  deadlocked_port=""
  for _ in $(seq 1 "${1:-600}"); do
    for a in "${aports[@]}"; do
      if curl -s --max-time 2 "http://127.0.0.1:$a/debug/threads" | grep -q '^DEADLOCK'; then
        deadlocked_port=$a
        return 0
      fi
    done
    kill -0 "$demo" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# stop_demo: SIGINT (the demo stops its replicas), wait up to 30 s.
stop_demo() {
  kill -INT "$demo" 2>/dev/null
  for _ in $(seq 1 300); do kill -0 "$demo" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$demo" 2>/dev/null && fail "the demo did not stop within 30 s of SIGINT"
  wait "$demo" 2>/dev/null
  demo=""
}
