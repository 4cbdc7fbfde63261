#!/usr/bin/env bash
# coord driven by a real Redis client: redis-cli (Debian package redis-tools)
# against a running `ravel coord` started here on free loopback ports with a
# temporary data directory.  Covers PING/INFO, sessions, acquire/NOWAIT/WAIT,
# FIFO hand-off between blocked redis-cli processes, cancellation by killing
# a blocked client, hand-off on session expiry, stale and foreign releases,
# bad input, and fencing tokens that keep increasing across a clean restart
# (SIGTERM) and a crash (SIGKILL) on the same data directory.
#
# Every wait polls observed state with a bound; no check rests on a sleep.
# Every process started here is stopped by its pid on exit, failure included.
# Usage: check_coord_redis_cli.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_coord_redis_cli.sh <source dir> <build dir>}
bin="$build/ravel"

fail() {
  echo "FAIL: $*" >&2
  if [ -n "${COORD_ERR:-}" ] && [ -s "$COORD_ERR" ]; then
    echo "--- coord stderr (last 20 lines) ---" >&2
    tail -n 20 "$COORD_ERR" >&2
  fi
  exit 1
}
ok() { echo "ok: $*"; }

[ -x "$bin" ] || fail "$bin not built: run ninja -C $build ravel"
command -v redis-cli >/dev/null 2>&1 || fail "redis-cli not found: install Debian's redis-tools (scripts/bootstrap)"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ravel-coord-cli.XXXXXX") || fail "mktemp"
data="$tmp/data"
PIDS=()          # every process started here that may still run
COORD_PID=""
COORD_ERR=""
PORT=""
ADMIN_PORT=""
BOOTS=0

# Stop one pid we started: TERM, then KILL if it has not gone in 5 s; reap it.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  local rc=$? pid
  for pid in "${PIDS[@]}"; do
    [ -n "$pid" ] && stop_pid "$pid"
  done
  rm -rf "$tmp"
  exit $rc
}
trap cleanup EXIT
trap 'echo "interrupted: cleaning up" >&2; exit 130' INT TERM

forget_pid() {
  local pid=$1 i
  for i in "${!PIDS[@]}"; do
    [ "${PIDS[$i]}" = "$pid" ] && unset 'PIDS[i]'
  done
}

# Microseconds since the epoch (bash 5's EPOCHREALTIME).
now_us() { local t=${EPOCHREALTIME/./}; echo "${t/,/}"; }

# Poll a command until it succeeds: every 0.05 s, for at most 10 s of wall time.
poll() {
  local deadline=$(($(now_us) + 10000000))
  while :; do
    "$@" && return 0
    [ "$(now_us)" -lt $deadline ] || return 1
    sleep 0.05
  done
}

# Start coord on the data dir.  Ports are picked at random and retried when
# taken (coord exits with "in use?"); first try the previous ports, if any.
start_coord() {
  local attempt line
  BOOTS=$((BOOTS + 1))
  for ((attempt = 0; attempt < 20; attempt++)); do
    if [ $attempt -gt 0 ] || [ -z "$PORT" ]; then
      PORT=$(shuf -i 20000-59999 -n 1)
      ADMIN_PORT=$(shuf -i 20000-59999 -n 1)
      [ "$PORT" = "$ADMIN_PORT" ] && continue
    fi
    COORD_ERR="$tmp/coord.$BOOTS.$attempt.err"
    "$bin" coord --host 127.0.0.1 --port "$PORT" --admin-port "$ADMIN_PORT" --data "$data" \
      >"$tmp/coord.$BOOTS.$attempt.out" 2>"$COORD_ERR" &
    COORD_PID=$!
    PIDS+=("$COORD_PID")
    local started=0 deadline=$(($(now_us) + 10000000))
    while [ "$(now_us)" -lt $deadline ]; do
      if grep -q '^coord: RESP on' "$tmp/coord.$BOOTS.$attempt.out" 2>/dev/null; then
        started=1
        break
      fi
      kill -0 "$COORD_PID" 2>/dev/null || break
      sleep 0.05
    done
    if [ $started = 1 ]; then
      line=$(redis-cli -h 127.0.0.1 -p "$PORT" --no-raw PING 2>&1)
      [ "$line" = PONG ] || fail "coord (pid $COORD_PID) announced port $PORT but PING answered '$line'"
      echo "coord started: pid $COORD_PID, RESP 127.0.0.1:$PORT, admin :$ADMIN_PORT, data $data (start #$BOOTS)"
      return 0
    fi
    stop_pid "$COORD_PID"
    forget_pid "$COORD_PID"
    grep -q 'in use' "$COORD_ERR" || fail "coord did not start (not a port clash)"
  done
  fail "coord did not start: no free port pair in 20 attempts"
}

# Stop coord with a signal and wait (bounded) for it to exit.
stop_coord() {
  local sig=$1 i status
  kill -0 "$COORD_PID" 2>/dev/null || fail "coord pid $COORD_PID is not running"
  # stderr off while it dies: bash would print a "Killed" job notice.
  {
    kill "-$sig" "$COORD_PID"
    for ((i = 0; i < 200; i++)); do
      kill -0 "$COORD_PID" || break
      sleep 0.05
    done
  } 2>/dev/null
  kill -0 "$COORD_PID" 2>/dev/null && fail "coord pid $COORD_PID still runs 10 s after SIG$sig"
  wait "$COORD_PID" 2>/dev/null
  status=$?
  forget_pid "$COORD_PID"
  if [ "$sig" = TERM ]; then
    [ $status = 0 ] || fail "coord exited with status $status after SIGTERM (expected 0)"
  else
    [ $status = $((128 + 9)) ] || fail "coord exited with status $status after SIG$sig (expected 137)"
  fi
  echo "coord pid $COORD_PID stopped by SIG$sig (exit status $status)"
}

# One redis-cli call, formatted (--no-raw) so that integers, nil and errors are told apart.
rc() { redis-cli -h 127.0.0.1 -p "$PORT" --no-raw "$@" 2>&1; }

# The integer of a reply "(integer) N", or fail.
expect_int() {
  local what=$1 reply=$2
  [[ $reply =~ ^\(integer\)\ (-?[0-9]+)$ ]] || fail "$what: expected an integer reply, got '$reply'"
  echo "${BASH_REMATCH[1]}"
}

# Assert a reply equals a string / starts with a prefix.
expect_eq() {
  [ "$2" = "$3" ] || fail "$1: expected '$3', got '$2'"
}
expect_prefix() {
  [[ $2 == "$3"* ]] || fail "$1: expected a reply starting with '$3', got '$2'"
}

# A top-level field of a flat-map reply (LOCK.INFO, SESSION.INFO): the line
# after the key, with its "N) " index and "(integer) " stripped, quotes removed.
field() {
  local key=$1
  shift
  rc "$@" | awk -v k="\"$key\"" '
    f { sub(/^ *[0-9]+\) /, ""); sub(/^\(integer\) /, ""); gsub(/^"|"$/, ""); print; exit }
    { line = $0; sub(/^ *[0-9]+\) /, "", line); if (line == k) f = 1 }'
}

# waiter_count of a lock; LOCK.INFO answers (nil) for a free lock nobody waits for: 0.
waiters_are() { local n; n=$(field waiter_count LOCK.INFO "$1"); [ "${n:-0}" = "$2" ]; }
pid_gone() { ! kill -0 "$1" 2>/dev/null; }

# Open a session; prints its id.
open_session() {
  local ttl=$1 service=$2 reply
  reply=$(rc SESSION.OPEN "$ttl" SERVICE "$service" REPLICA r1 HOST "$(hostname)" PID $$)
  expect_int "SESSION.OPEN $ttl SERVICE $service" "$reply"
}

# Track the highest token seen, to compare with tokens after restarts.
MAXTOK=0
saw_token() { [ "$1" -gt "$MAXTOK" ] && MAXTOK=$1; return 0; }

# Start a blocking `redis-cli LOCK.ACQUIRE` in the background; sets BG_PID, output in $tmp/$tag.out.
bg_acquire() {
  local tag=$1
  shift
  redis-cli -h 127.0.0.1 -p "$PORT" --no-raw LOCK.ACQUIRE "$@" >"$tmp/$tag.out" 2>&1 &
  BG_PID=$!
  PIDS+=("$BG_PID")
}

# Wait (bounded) for a background redis-cli to exit and reap it; its output
# goes to BG_OUT.  Runs in this shell (not in $(...)), which owns the child.
bg_wait() {
  local pid=$1 tag=$2
  poll pid_gone "$pid" || fail "$tag: blocked redis-cli (pid $pid) still waits after 10 s"
  wait "$pid"
  forget_pid "$pid"
  BG_OUT=$(cat "$tmp/$tag.out")
}

start_coord

# ---- basics --------------------------------------------------------------------------------
echo "== basics"
expect_eq "PING" "$(rc PING)" PONG
expect_eq "PING msg" "$(rc PING hello)" '"hello"'
ok "PING answers PONG and echoes a message"
info=$(rc INFO)
grep -q '^loading:0' <<<"${info//$'\r'/}" || fail "INFO lacks loading:0: $info"
grep -q '^redis_version:' <<<"${info//$'\r'/}" || fail "INFO lacks redis_version: $info"
ok "INFO contains loading:0 and redis_version"

# ---- sessions --------------------------------------------------------------------------------
echo "== sessions"
A=$(open_session 30000 cli-a) || exit 1
[ "$A" -gt 0 ] || fail "SESSION.OPEN returned id $A"
expect_eq "SESSION.INFO service" "$(field service SESSION.INFO "$A")" cli-a
expect_eq "SESSION.INFO pid" "$(field pid SESSION.INFO "$A")" "$$"
expect_eq "SESSION.INFO ttl_ms" "$(field ttl_ms SESSION.INFO "$A")" 30000
ok "SESSION.OPEN returned id $A; SESSION.INFO shows its identity and TTL"
left=$(expect_int "SESSION.KEEPALIVE" "$(rc SESSION.KEEPALIVE "$A")") || exit 1
[ "$left" -gt 0 ] && [ "$left" -le 30000 ] || fail "SESSION.KEEPALIVE returned $left ms"
ok "SESSION.KEEPALIVE answers the remaining TTL ($left ms)"
B=$(open_session 30000 cli-b) || exit 1
C=$(open_session 30000 cli-c) || exit 1
[ "$A" != "$B" ] && [ "$B" != "$C" ] || fail "session ids not distinct: $A $B $C"

# ---- acquire, NOWAIT, WAIT -------------------------------------------------------------------
echo "== acquire"
t1=$(expect_int "LOCK.ACQUIRE A job" "$(rc LOCK.ACQUIRE "$A" job DESC 'cli holder')") || exit 1
saw_token "$t1"
ok "LOCK.ACQUIRE by session A granted token $t1"
expect_eq "LOCK.INFO holder" "$(field holder_session LOCK.INFO job)" "$A"
expect_eq "LOCK.INFO description" "$(field description LOCK.INFO job)" "cli holder"
ok "LOCK.INFO shows holder session A with its description"
expect_eq "NOWAIT on a held lock" "$(rc LOCK.ACQUIRE "$B" job NOWAIT)" "(nil)"
ok "NOWAIT on a held lock answers (nil)"
expect_eq "WAIT 50 on a held lock" "$(rc LOCK.ACQUIRE "$B" job WAIT 50)" "(nil)"
waiters_are job 0 || fail "a timed-out WAIT left a waiter on job"
ok "WAIT 50 on a held lock answers (nil) and leaves no waiter"

# ---- FIFO hand-off to blocked redis-cli processes --------------------------------------------
echo "== FIFO hand-off"
bg_acquire wb "$B" job DESC waiter-b
pb=$BG_PID
poll waiters_are job 1 || fail "first background waiter (session B) never queued on job"
bg_acquire wc "$C" job DESC waiter-c
pc=$BG_PID
poll waiters_are job 2 || fail "second background waiter (session C) never queued on job"
ok "two blocked redis-cli LOCK.ACQUIRE queued in order (waiter_count 1, then 2)"
kill -0 "$pb" 2>/dev/null && kill -0 "$pc" 2>/dev/null || fail "a blocked redis-cli exited before any release"
expect_eq "LOCK.RELEASE by holder" "$(rc LOCK.RELEASE "$A" job "$t1")" OK
bg_wait "$pb" wb
tb=$(expect_int "waiter B's grant" "$BG_OUT") || exit 1
[ "$tb" -gt "$t1" ] || fail "hand-off token $tb is not larger than the released token $t1"
saw_token "$tb"
expect_eq "holder after hand-off" "$(field holder_session LOCK.INFO job)" "$B"
waiters_are job 1 || fail "after the first hand-off job should have 1 waiter"
kill -0 "$pc" 2>/dev/null || fail "second waiter (session C) was answered before the first one released: $(cat "$tmp/wc.out")"
ok "release handed job to the first waiter (B) with token $tb > $t1; C still waits"
expect_eq "LOCK.RELEASE by B" "$(rc LOCK.RELEASE "$B" job "$tb")" OK
bg_wait "$pc" wc
tc=$(expect_int "waiter C's grant" "$BG_OUT") || exit 1
[ "$tc" -gt "$tb" ] || fail "second hand-off token $tc is not larger than $tb"
saw_token "$tc"
expect_eq "holder after second hand-off" "$(field holder_session LOCK.INFO job)" "$C"
ok "B's release handed job to C with token $tc > $tb (FIFO)"
expect_eq "LOCK.RELEASE by C" "$(rc LOCK.RELEASE "$C" job "$tc")" OK
expect_eq "LOCK.INFO of a free lock nobody waits for" "$(rc LOCK.INFO job)" "(nil)"

# ---- cancellation by killing the blocked client ----------------------------------------------
echo "== cancellation by closing the connection"
tk=$(expect_int "LOCK.ACQUIRE A kjob" "$(rc LOCK.ACQUIRE "$A" kjob)") || exit 1
saw_token "$tk"
bg_acquire wk "$B" kjob
pk=$BG_PID
poll waiters_are kjob 1 || fail "background waiter never queued on kjob"
expect_eq "SESSION.INFO B waiting_count" "$(field waiting_count SESSION.INFO "$B")" 1
kill -KILL "$pk"
wait "$pk" 2>/dev/null
forget_pid "$pk"
poll waiters_are kjob 0 || fail "killing the blocked redis-cli did not withdraw its wait (waiter_count $(field waiter_count LOCK.INFO kjob))"
expect_eq "SESSION.INFO B waiting_count after kill" "$(field waiting_count SESSION.INFO "$B")" 0
ok "killing the blocked redis-cli withdrew its wait (waiter_count 1 -> 0)"
expect_eq "LOCK.RELEASE A kjob" "$(rc LOCK.RELEASE "$A" kjob "$tk")" OK
expect_eq "LOCK.INFO kjob after release" "$(rc LOCK.INFO kjob)" "(nil)"
ok "the withdrawn waiter was not granted the lock on release"

# ---- session expiry hands the lock to a waiter -----------------------------------------------
echo "== session expiry"
E=$(open_session 2000 cli-expiring) || exit 1
te=$(expect_int "LOCK.ACQUIRE E ejob" "$(rc LOCK.ACQUIRE "$E" ejob)") || exit 1
saw_token "$te"
bg_acquire we "$B" ejob
pe=$BG_PID
# Keep E alive until the waiter is seen queued behind it, whatever the machine's speed.
queued_keeping_alive() { rc SESSION.KEEPALIVE "$E" >/dev/null; waiters_are ejob 1; }
poll queued_keeping_alive || fail "background waiter never queued on ejob"
expect_eq "ejob holder before expiry" "$(field holder_session LOCK.INFO ejob)" "$E"
ok "session E (TTL 2000 ms) holds ejob, B waits; keepalives stop now"
bg_wait "$pe" we
tw=$(expect_int "waiter's grant after E expired" "$BG_OUT") || exit 1
[ "$tw" -gt "$te" ] || fail "token after expiry $tw is not larger than the expired holder's $te"
saw_token "$tw"
expect_eq "ejob holder after expiry" "$(field holder_session LOCK.INFO ejob)" "$B"
expect_prefix "SESSION.INFO of expired session" "$(rc SESSION.INFO "$E")" "(error) NOSESSION"
expect_prefix "LOCK.RELEASE by the expired session" "$(rc LOCK.RELEASE "$E" ejob "$te")" "(error) NOSESSION"
ok "E's expiry released ejob to the waiter (token $tw > $te); E is gone, its release refused"
expect_eq "LOCK.RELEASE B ejob" "$(rc LOCK.RELEASE "$B" ejob "$tw")" OK

# ---- stale and foreign releases ---------------------------------------------------------------
echo "== stale and foreign releases"
s1=$(expect_int "LOCK.ACQUIRE A sjob" "$(rc LOCK.ACQUIRE "$A" sjob)") || exit 1
expect_eq "release sjob" "$(rc LOCK.RELEASE "$A" sjob "$s1")" OK
s2=$(expect_int "LOCK.ACQUIRE A sjob again" "$(rc LOCK.ACQUIRE "$A" sjob)") || exit 1
[ "$s2" -gt "$s1" ] || fail "re-acquire token $s2 not larger than $s1"
saw_token "$s2"
reply=$(rc LOCK.RELEASE "$A" sjob "$s1")
expect_prefix "release with the old token" "$reply" "(error) STALE"
grep -q "stale fencing token $s1" <<<"$reply" || fail "STALE error does not name the token: $reply"
ok "release with the old token $s1 refused: ${reply#(error) }"
reply=$(rc LOCK.RELEASE "$B" sjob "$s2")
expect_prefix "release by another session" "$reply" "(error) NOTOWNER"
ok "release by another session refused: ${reply#(error) }"
expect_eq "sjob still held by A" "$(field holder_session LOCK.INFO sjob)" "$A"
expect_eq "sjob token unchanged" "$(field token LOCK.INFO sjob)" "$s2"
ok "the refused releases freed nothing (A still holds sjob with token $s2)"
expect_eq "release sjob" "$(rc LOCK.RELEASE "$A" sjob "$s2")" OK
expect_prefix "release of a free lock" "$(rc LOCK.RELEASE "$A" sjob "$s2")" "(error) NOTHELD"
ok "releasing a free lock answers NOTHELD"

# ---- bad input ---------------------------------------------------------------------------------
echo "== bad input"
expect_prefix "LOCK.RELEASE arity" "$(rc LOCK.RELEASE "$A" sjob)" "(error) ERR wrong arguments: usage: LOCK.RELEASE"
expect_prefix "SESSION.OPEN arity" "$(rc SESSION.OPEN)" "(error) ERR wrong arguments: usage: SESSION.OPEN"
expect_prefix "LOCK.INFO arity" "$(rc LOCK.INFO a b)" "(error) ERR wrong arguments: usage: LOCK.INFO"
expect_prefix "PING arity" "$(rc PING a b)" "(error) ERR wrong arguments"
ok "wrong arity answers 'ERR wrong arguments: usage: ...'"
expect_prefix "unknown command" "$(rc NOSUCHCMD x)" "(error) ERR unknown command 'NOSUCHCMD'"
ok "unknown command answers \"ERR unknown command 'NOSUCHCMD'\""
expect_prefix "negative TTL" "$(rc SESSION.OPEN -1 SERVICE x)" "(error) BADTTL"
expect_prefix "unknown session" "$(rc LOCK.ACQUIRE 12345 x NOWAIT)" "(error) NOSESSION"
expect_prefix "empty lock name" "$(rc LOCK.ACQUIRE "$A" '' NOWAIT)" "(error) BADNAME"
expect_prefix "SELECT 1" "$(rc SELECT 1)" "(error) ERR DB index is out of range"
ok "bad TTL, unknown session, empty name, SELECT 1: specific errors"
expect_eq "PING after errors" "$(rc PING)" PONG
ok "the server still answers after bad input"

# ---- fencing tokens across restarts ---------------------------------------------------------------
echo "== fencing tokens across restarts (highest token so far: $MAXTOK)"
# Issue more than one reservation range (1024 tokens) so that the high-water
# mark is re-persisted while running, then crash-test it later.
batch() {
  local sess=$1 prefix=$2 n=$3 i
  for ((i = 0; i < n; i++)); do echo "LOCK.ACQUIRE $sess $prefix$i NOWAIT"; done |
    redis-cli -h 127.0.0.1 -p "$PORT" --no-raw 2>&1
}
check_batch() {
  local what=$1 out=$2 n=$3 prev=$4 line count=0 v
  while IFS= read -r line; do
    [[ $line =~ ^\(integer\)\ ([0-9]+)$ ]] || fail "$what: expected an integer reply, got '$line'"
    v=${BASH_REMATCH[1]}
    [ "$v" -gt "$prev" ] || fail "$what: token $v after $prev is not increasing"
    prev=$v
    count=$((count + 1))
  done <<<"$out"
  [ $count = "$n" ] || fail "$what: $count replies for $n commands"
  LAST=$prev
}
check_batch "1200 grants before SIGTERM" "$(batch "$A" pre 1200)" 1200 "$MAXTOK"
saw_token "$LAST"
ok "1200 pipelined grants with strictly increasing tokens, highest $MAXTOK"
info=$(rc INFO)
grep -q '^waiters:0' <<<"${info//$'\r'/}" || fail "INFO before restart should show waiters:0: $info"

stop_coord TERM
start_coord
info=$(rc INFO)
grep -q '^loading:0' <<<"${info//$'\r'/}" || fail "INFO after restart lacks loading:0"
grep -q '^boot:2' <<<"${info//$'\r'/}" || fail "INFO after restart does not say boot:2: $info"
expect_prefix "session of the previous boot" "$(rc SESSION.INFO "$A")" "(error) NOSESSION"
ok "after SIGTERM + restart: INFO loading:0 boot:2, old session $A unknown"
A2=$(open_session 30000 cli-after-term) || exit 1
[ "$A2" != "$A" ] && [ "$A2" != "$B" ] && [ "$A2" != "$C" ] || fail "session id $A2 reused after restart"
r1=$(expect_int "LOCK.ACQUIRE job after restart" "$(rc LOCK.ACQUIRE "$A2" job)") || exit 1
[ "$r1" -gt "$MAXTOK" ] || fail "token $r1 after SIGTERM restart is not above every earlier token ($MAXTOK)"
r2=$(expect_int "LOCK.ACQUIRE pre0 after restart" "$(rc LOCK.ACQUIRE "$A2" pre0)") || exit 1
[ "$r2" -gt "$r1" ] || fail "token $r2 not above $r1"
ok "tokens after SIGTERM restart ($r1, $r2) exceed every earlier token ($MAXTOK)"
saw_token "$r2"
check_batch "1200 grants before SIGKILL" "$(batch "$A2" post 1200)" 1200 "$MAXTOK"
saw_token "$LAST"
ok "1200 more grants, highest $MAXTOK; now SIGKILL (no clean shutdown)"

stop_coord KILL
start_coord
info=$(rc INFO)
grep -q '^loading:0' <<<"${info//$'\r'/}" || fail "INFO after crash restart lacks loading:0"
grep -q '^boot:3' <<<"${info//$'\r'/}" || fail "INFO after crash restart does not say boot:3"
A3=$(open_session 30000 cli-after-kill) || exit 1
for lock in job pre0 post0 post1199 fresh; do
  k=$(expect_int "LOCK.ACQUIRE $lock after crash" "$(rc LOCK.ACQUIRE "$A3" "$lock")") || exit 1
  [ "$k" -gt "$MAXTOK" ] || fail "token $k for $lock after SIGKILL restart is not above every earlier token ($MAXTOK)"
  saw_token "$k"
done
ok "tokens after SIGKILL restart exceed every earlier token (now up to $MAXTOK)"
expect_eq "PING at the end" "$(rc PING)" PONG

stop_coord TERM
echo "check_coord_redis_cli: all checks passed"
