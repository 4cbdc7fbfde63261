#!/usr/bin/env bash
# coord driven by a real Redis client: redis-cli (Debian package redis-tools)
# against a running `ravel coord` started here on free loopback ports with a
# temporary data directory.  Covers PING/INFO, sessions, acquire/NOWAIT/WAIT,
# FIFO hand-off between blocked redis-cli processes, cancellation by killing
# a blocked client, hand-off on session expiry, stale and foreign releases,
# bad input, and fencing tokens that keep increasing across a clean restart
# (SIGTERM) and a crash (SIGKILL) on the same data directory.
# Config (CFG.*): services registered by their sessions, dry runs (inheriting
# targets old -> new; with ALL the overridden ones), a blocked CFG.WATCH in a
# background redis-cli answered only by a write that changes what billing
# sees, watch resumption, CFG.WATCHRAW, IFREV conflicts, the audit log,
# rollback, and config, revision and history surviving both restarts.
# Nested replies are read with `redis-cli -2 --json` and a small awk parser.
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
LAUNCHES=0       # coord processes started, including those that found their port taken (no boot)

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
    LAUNCHES=$((LAUNCHES + 1))
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

# ---- JSON replies, for the nested replies of the config commands ----------------------------
# `redis-cli -2 --json` (redis-cli >= 7) prints a reply as one JSON document;
# jflat turns it into one "path<TAB>value" line per scalar, where a path is
# "." for the whole reply and ".i.j..." (0-based indices) inside it, so
# ".7.0.5" is the 6th element of the 1st element of the 8th; nil is "(nil)",
# and every array also gets a line "path#<TAB>length".  Plain awk, no jq.
rj() { redis-cli -2 --json -h 127.0.0.1 -p "$PORT" "$@" 2>&1; }
jflat() {
  awk '
    { s = s $0 }
    function skip() { while (p <= n && index(" \t\r\n,:", substr(s, p, 1))) p++ }
    function val(path,    c, i, out, ch, tok) {
      skip()
      c = substr(s, p, 1)
      if (c == "[") {
        p++
        for (i = 0; ; i++) {
          skip()
          if (p > n) { print "jflat: unterminated array" > "/dev/stderr"; exit 1 }
          if (substr(s, p, 1) == "]") { p++; break }
          val((path == "." ? "" : path) "." i)
        }
        print path "#\t" i
        return
      }
      if (c == "\"") {
        out = ""
        for (p++; p <= n; p++) {
          ch = substr(s, p, 1)
          if (ch == "\"") break
          if (ch == "\\") { p++; ch = substr(s, p, 1); if (ch == "n") ch = "\\n"; else if (ch == "t") ch = "\\t" }
          out = out ch
        }
        p++
        print path "\t" out
        return
      }
      tok = substr(s, p)
      match(tok, /^[^],[ \t\r\n]+/)
      tok = substr(tok, 1, RLENGTH)
      p += RLENGTH
      print path "\t" (tok == "null" ? "(nil)" : tok)
    }
    END { n = length(s); p = 1; val(".") }'
}
# cj NAME command...: a config command's reply, flattened into the associative
# array NAME (path -> value); fails on an error or a reply that is not an array.
cj() {
  local name=$1 out
  shift
  out=$(rj "$@")
  [[ $out == \[* ]] || fail "$1 $2: expected an array reply, got '$out'"
  jparse "$name" "$out"
}
# jparse NAME JSON: JSON flattened into the associative array NAME.
jparse() {
  local -n _jp=$1
  local k v
  _jp=()
  while IFS=$'\t' read -r k v; do _jp[$k]=$v; done < <(jflat <<<"$2")
}
# _jm NAME PATH KEY: set JM to KEY's value in the flat map [k, v, k, v...] at
# PATH of the flattened reply NAME (JMP to its path); status 1 if absent.
_jm() {
  local -n _a=$1
  local pre=${2%.}. i=0
  JM="" JMP=""
  while [[ -v _a[$pre$i] ]]; do
    if [ "${_a[$pre$i]}" = "$3" ]; then
      JMP=$pre$((i + 1)) JM=${_a[$pre$((i + 1))]-}
      return 0
    fi
    i=$((i + 2))
  done
  return 1
}
jget() { local -n _a=$1; [[ -v _a[$2] ]] && echo "${_a[$2]}"; }       # the scalar at PATH
jlen() { jget "$1" "$2#"; }                                              # the length of the array at PATH
jmap() { _jm "$@" && echo "$JM"; }                                       # KEY's value in the map at PATH
jkey() { _jm "$@" && echo "$JMP"; }                                      # the path of KEY's value
# jfind NAME ARRAY KEY VALUE [KEY VALUE]: the path of the first map in the
# array at ARRAY whose KEY is VALUE (and whose second KEY is VALUE).
jfind() {
  local -n _a=$1
  local n=${_a[$2#]:-0} i
  for ((i = 0; i < n; i++)); do
    _jm "$1" "${2%.}.$i" "$3" && [ "$JM" = "$4" ] || continue
    [ $# -lt 6 ] || { _jm "$1" "${2%.}.$i" "$5" && [ "$JM" = "$6" ]; } || continue
    echo "${2%.}.$i"
    return 0
  done
  return 1
}
# jcol NAME ARRAY KEY: KEY of every map in the array at ARRAY, space-separated.
jcol() {
  local -n _a=$1
  local n=${_a[$2#]:-0} i out=()
  for ((i = 0; i < n; i++)); do
    _jm "$1" "${2%.}.$i" "$3"
    out+=("$JM")
  done
  echo "${out[*]}"
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

# ---- config -----------------------------------------------------------------------------------
echo "== config: targets, layers, dry run"
[[ $(redis-cli --help 2>&1) == *--json* ]] ||
  fail "$(redis-cli --version) has no --json (redis-cli >= 7 is needed to read nested config replies)"
# Flattened replies (see cj): targets, effective, dry run, get, watch, audit.
declare -A CT CE CD CG CW CA
cfg_set() { local what=$1; shift; expect_int "$what" "$(rc CFG.SET "$@")"; }
cfg_rev() { expect_int "CFG.REVISION" "$(rc CFG.REVISION)"; }
# Sum of the `watches` of the CFG.TARGETS rows of a service (its own and its replicas').
cfg_watches() {
  local -A tg
  local n i sum=0
  cj tg CFG.TARGETS "$1"
  n=${tg[.#]:-0}
  for ((i = 0; i < n; i++)); do _jm tg ".$i" watches && sum=$((sum + JM)); done
  echo "$sum"
}
billing_watched() { local w; w=$(cfg_watches billing) && [ "$w" -ge 1 ]; }
# expect_map WHAT NAME PATH key=value...: fields of the flat map at PATH of the reply NAME.
expect_map() {
  local what=$1 name=$2 at=$3 kv k v
  shift 3
  for kv in "$@"; do
    k=${kv%%=*} v=${kv#*=}
    _jm "$name" "$at" "$k" || fail "$what: no field '$k' in the reply"
    [ "$JM" = "$v" ] || fail "$what: $k is '$JM', expected '$v'"
  done
}

CSB=$(expect_int "SESSION.OPEN billing" "$(rc SESSION.OPEN 60000 SERVICE billing REPLICA 1 PID $$)") || exit 1
CSS=$(expect_int "SESSION.OPEN search" "$(rc SESSION.OPEN 60000 SERVICE search PID $$)") || exit 1
cj CT CFG.TARGETS
at=$(jfind CT . service billing replica 1) || fail "CFG.TARGETS does not list billing/1 after its SESSION.OPEN"
expect_map "CFG.TARGETS billing/1" CT "$at" ns=svc/billing/1 registered=1 keys=0 watches=0
jfind CT . service billing replica "" >/dev/null || fail "CFG.TARGETS does not list the service billing"
at=$(jfind CT . service search replica "") || fail "CFG.TARGETS does not list search after its SESSION.OPEN"
expect_map "CFG.TARGETS search" CT "$at" ns=svc/search registered=1
NTARGETS=$(jlen CT .)
ok "SESSION.OPEN registered billing/1 and search with config (CFG.TARGETS: $NTARGETS targets in all)"

R_POOL=$(cfg_set "CFG.SET platform db.pool" platform db.pool 10 AUTHOR ops-alice REASON "initial pool") || exit 1
R_LOG=$(cfg_set "CFG.SET platform log.level" platform log.level info AUTHOR ops-alice REASON "initial level") || exit 1
R_BLOG=$(cfg_set "CFG.SET svc/billing log.level" svc/billing log.level debug AUTHOR billing-bob REASON "debug billing") || exit 1
[ "$R_POOL" -lt "$R_LOG" ] && [ "$R_LOG" -lt "$R_BLOG" ] || fail "revisions not increasing: $R_POOL $R_LOG $R_BLOG"
expect_eq "CFG.REVISION" "$(cfg_rev)" "$R_BLOG"
cj CE CFG.EFFECTIVE billing/1 log.level
expect_map "CFG.EFFECTIVE billing/1 log.level" CE . value=debug layer=service ns=svc/billing mod_revision="$R_BLOG"
cj CE CFG.EFFECTIVE search log.level
expect_map "CFG.EFFECTIVE search log.level" CE . value=info layer=platform ns=platform
cj CE CFG.EFFECTIVE billing db.pool
expect_map "CFG.EFFECTIVE billing db.pool" CE . value=10 layer=platform mod_revision="$R_POOL"
ok "platform db.pool=10 (rev $R_POOL), log.level=info (rev $R_LOG), svc/billing log.level=debug (rev $R_BLOG): billing sees debug, search info"

# Dry run of a platform write everybody inherits: every target changes, 10 -> 20.
cj CD CFG.DRYRUN platform db.pool 20
imp=$(jkey CD . impacts) || fail "CFG.DRYRUN reply has no impacts"
n=$(jlen CD "$imp")
expect_eq "CFG.DRYRUN db.pool changes" "$(jmap CD . changes)" "$n"
expect_eq "CFG.DRYRUN db.pool impacts (every target inherits db.pool)" "$n" "$NTARGETS"
expect_eq "CFG.DRYRUN db.pool unaffected" "$(jmap CD . unaffected)" 0
expect_eq "CFG.DRYRUN revision_now" "$(jmap CD . revision_now)" "$R_BLOG"
for t in billing/ billing/1 search/; do
  at=$(jfind CD "$imp" service "${t%%/*}" replica "${t#*/}") ||
    fail "CFG.DRYRUN platform db.pool 20 does not name ${t%/}: $(jcol CD "$imp" service)"
  expect_map "CFG.DRYRUN db.pool impact on ${t%/}" CD "$at" effect=changes overridden_by= \
    old=10 old_layer=platform new=20 new_layer=platform
done
expect_eq "CFG.DRYRUN db.pool effects" "$(jcol CD "$imp" effect | tr ' ' '\n' | sort -u)" changes
ok "CFG.DRYRUN platform db.pool 20: all $n targets change 10 -> 20, billing, billing/1, search (inheriting) among them"

# Dry run of a platform write billing overrides: billing is not listed, unless ALL.
cj CD CFG.DRYRUN platform log.level warn
imp=$(jkey CD . impacts) || fail "CFG.DRYRUN reply has no impacts"
n=$(jlen CD "$imp")
jfind CD "$imp" service billing >/dev/null && fail "CFG.DRYRUN platform log.level (no ALL) lists billing, which overrides it"
at=$(jfind CD "$imp" service search replica "") || fail "CFG.DRYRUN platform log.level does not name search"
expect_map "CFG.DRYRUN log.level impact on search" CD "$at" effect=changes old=info old_layer=platform \
  new=warn new_layer=platform
expect_eq "CFG.DRYRUN log.level changes" "$(jmap CD . changes)" "$n"
expect_eq "CFG.DRYRUN log.level unaffected (billing, billing/1)" "$(jmap CD . unaffected)" 2
expect_eq "CFG.DRYRUN log.level changes + unaffected" "$((n + 2))" "$NTARGETS"
cj CD CFG.DRYRUN platform log.level warn ALL
imp=$(jkey CD . impacts) || fail "CFG.DRYRUN ALL reply has no impacts"
expect_eq "CFG.DRYRUN ALL impacts" "$(jlen CD "$imp")" "$NTARGETS"
for t in billing/ billing/1; do
  at=$(jfind CD "$imp" service billing replica "${t#*/}") || fail "CFG.DRYRUN ... ALL does not name ${t%/}"
  expect_map "CFG.DRYRUN ALL log.level on ${t%/}" CD "$at" effect=overridden overridden_by=service \
    old=debug old_layer=service new=debug new_layer=service
done
at=$(jfind CD "$imp" service search replica "") || fail "CFG.DRYRUN ... ALL does not name search"
expect_map "CFG.DRYRUN ALL log.level on search" CD "$at" effect=changes old=info new=warn
ok "CFG.DRYRUN platform log.level warn: search info -> warn; billing and billing/1 only with ALL, effect overridden (by service, debug)"
cj CD CFG.DRYRUN platform db.pool 10 ALL
imp=$(jkey CD . impacts)
expect_eq "CFG.DRYRUN of the current value: changes" "$(jmap CD . changes)" 0
expect_eq "CFG.DRYRUN of the current value: effects" "$(jcol CD "$imp" effect | tr ' ' '\n' | sort -u)" same
expect_prefix "CFG.DRYRUN with a stale IFREV" "$(rc CFG.DRYRUN platform db.pool 20 IFREV "$R_LOG")" "(error) CONFLICT"
expect_eq "CFG.REVISION after dry runs" "$(cfg_rev)" "$R_BLOG"
cj CG CFG.GET platform db.pool
expect_map "CFG.GET platform db.pool after dry runs" CG . value=10 mod_revision="$R_POOL"
ok "a dry run of the current value: every target 'same'; a stale IFREV: CONFLICT; dry runs wrote nothing"

echo "== config: watch notifications only on effective change"
REV0=$(cfg_rev) || exit 1
redis-cli -2 --json -h 127.0.0.1 -p "$PORT" CFG.WATCH billing SINCE "$REV0" TIMEOUT 20000 >"$tmp/watch.out" 2>&1 &
pw=$!
PIDS+=("$pw")
poll billing_watched || fail "the background CFG.WATCH billing never showed in CFG.TARGETS billing: $(cat "$tmp/watch.out")"
ok "CFG.WATCH billing SINCE $REV0 TIMEOUT 20000 blocks in a background redis-cli (CFG.TARGETS billing: watches $(cfg_watches billing))"
RA=$(cfg_set "(a)" platform log.level warn AUTHOR ops-carol REASON "(a) quieter platform") || exit 1
billing_watched || fail "(a), a platform write of a key billing overrides, answered billing's watch: $(cat "$tmp/watch.out")"
RB=$(cfg_set "(b)" svc/billing log.level debug AUTHOR billing-bob REASON "(b) same value") || exit 1
billing_watched || fail "(b), a write of the value billing already has, answered billing's watch: $(cat "$tmp/watch.out")"
kill -0 "$pw" 2>/dev/null || fail "the watching redis-cli exited before (c): $(cat "$tmp/watch.out")"
ok "(a) platform log.level=warn (rev $RA; billing overrides it), (b) svc/billing log.level=debug again (rev $RB): the watch still waits"
RC=$(cfg_set "(c)" platform db.pool 20 AUTHOR ops-carol REASON "(c) bigger pool") || exit 1
bg_wait "$pw" watch
[[ $BG_OUT == \[* ]] || fail "the watching redis-cli answered '$BG_OUT'"
jparse CW "$BG_OUT"
expect_eq "watch resume_rev" "$(jget CW .0)" "$RC"
expect_eq "watch event count (only (c))" "$(jlen CW .1)" 1
expect_map "watch event (c)" CW .1.0 revision="$RC" key=db.pool ns=platform op=set old=10 old_layer=platform \
  new=20 new_layer=platform author=ops-carol "reason=(c) bigger pool"
ok "(c) platform db.pool=20 (rev $RC; billing inherits it) answered the watch: exactly one event, 10 -> 20, resume_rev $RC"

echo "== config: resuming a watch"
RD=$(cfg_set "(d)" platform db.pool 30 AUTHOR ops-carol REASON "(d)") || exit 1            # billing inherits: event
RE=$(cfg_set "(e)" platform log.level error AUTHOR ops-carol REASON "(e)") || exit 1       # billing overrides: none
RF=$(cfg_set "(f)" svc/billing feature.beta on AUTHOR billing-bob REASON "(f)") || exit 1  # billing's own layer: event
RG=$(cfg_set "(g)" svc/search db.pool 5 AUTHOR search-sue REASON "(g)") || exit 1          # another service: none
RH=$(cfg_set "(h)" svc/billing/1 db.pool 7 AUTHOR billing-bob REASON "(h)") || exit 1      # replica 1 only: none for billing
cj CW CFG.WATCH billing SINCE "$RC" TIMEOUT 0
expect_eq "CFG.WATCH billing SINCE $RC: events" "$(jcol CW .1 revision)" "$RD $RF"
expect_map "resumed event (d)" CW .1.0 key=db.pool old=20 new=30 new_layer=platform
expect_map "resumed event (f)" CW .1.1 key=feature.beta ns=svc/billing op=set old="(nil)" old_layer=none new=on new_layer=service
resume=$(jget CW .0)
[ "$resume" -ge "$RF" ] && [ "$resume" -le "$RH" ] || fail "resume_rev $resume is not within [$RF, $RH]"
cj CW CFG.WATCH billing SINCE "$resume" TIMEOUT 0
expect_eq "CFG.WATCH billing SINCE $resume (the resume_rev): events" "$(jlen CW .1)" 0
ok "CFG.WATCH billing SINCE $RC TIMEOUT 0 returns exactly the 2 missed changes ($RD, $RF of $RD..$RH); from its resume_rev $resume: none"
cj CW CFG.WATCH billing SINCE "$REV0" TIMEOUT 0
expect_eq "CFG.WATCH billing SINCE $REV0: events" "$(jcol CW .1 revision)" "$RC $RD $RF"
cj CW CFG.WATCH billing/1 SINCE "$RC" TIMEOUT 0
expect_eq "CFG.WATCH billing/1 SINCE $RC: events" "$(jcol CW .1 revision)" "$RD $RF $RH"
expect_map "billing/1 event (h)" CW .1.2 key=db.pool ns=svc/billing/1 old=30 old_layer=platform new=7 new_layer=replica
ok "from $REV0 billing gets $RC $RD $RF; billing/1 from $RC also its replica's write: $RD $RF $RH"

cj CW CFG.WATCHRAW platform SINCE "$REV0" TIMEOUT 0
expect_eq "CFG.WATCHRAW platform SINCE $REV0: events" "$(jcol CW .1 revision)" "$RA $RC $RD $RE"
expect_map "raw event (a)" CW .1.0 key=log.level ns=platform old=info new=warn author=ops-carol
expect_map "raw event (e)" CW .1.3 key=log.level ns=platform old=warn new=error
ok "CFG.WATCHRAW platform SINCE $REV0 returns every platform write, (a) and (e) included: $RA $RC $RD $RE"

echo "== config: compare-and-set, audit, rollback"
before=$(cfg_rev) || exit 1
reply=$(rc CFG.SET platform db.pool 40 IFREV "$R_POOL" AUTHOR ops-dave REASON stale)
expect_prefix "CFG.SET with a stale IFREV" "$reply" "(error) CONFLICT"
grep -q "mod_revision $RD" <<<"$reply" || fail "CONFLICT does not name the key's revision $RD: $reply"
expect_prefix "CFG.SET IFREV 0 of an existing key" "$(rc CFG.SET platform db.pool 40 IFREV 0)" "(error) CONFLICT"
expect_prefix "CFG.DEL with a stale IFREV" "$(rc CFG.DEL platform db.pool IFREV "$RC")" "(error) CONFLICT"
expect_eq "CFG.REVISION after conflicts" "$(cfg_rev)" "$before"
cj CG CFG.GET platform db.pool
expect_map "CFG.GET platform db.pool after conflicts" CG . value=30 mod_revision="$RD"
ok "stale IFREV ($R_POOL), IFREV 0 on an existing key, CFG.DEL with a stale IFREV: CONFLICT, nothing written: ${reply#(error) }"
RN=$(cfg_set "CFG.SET IFREV 0 of a new key" platform pool.mode strict IFREV 0 AUTHOR ops-dave REASON create) || exit 1
RI=$(cfg_set "CFG.SET IFREV $RD" platform db.pool 40 IFREV "$RD" AUTHOR ops-dave REASON "cas to 40") || exit 1
ok "IFREV 0 creates a new key (rev $RN); IFREV $RD (current) writes db.pool=40 (rev $RI)"

cj CA CFG.AUDIT KEY db.pool
expect_eq "CFG.AUDIT KEY db.pool revisions" "$(jcol CA . revision)" "$R_POOL $RC $RD $RG $RH $RI"
expect_eq "CFG.AUDIT KEY db.pool namespaces" "$(jcol CA . ns)" "platform platform platform svc/search svc/billing/1 platform"
expect_eq "CFG.AUDIT KEY db.pool authors" "$(jcol CA . author)" "ops-alice ops-carol ops-carol search-sue billing-bob ops-dave"
expect_eq "CFG.AUDIT KEY db.pool old values" "$(jcol CA . old)" "(nil) 10 20 (nil) (nil) 30"
expect_eq "CFG.AUDIT KEY db.pool new values" "$(jcol CA . new)" "10 20 30 5 7 40"
expect_map "CFG.AUDIT entry $R_POOL" CA .0 op=set key=db.pool "reason=initial pool" rollback_to=0 layer=platform
expect_map "CFG.AUDIT entry $RC" CA .1 "reason=(c) bigger pool"
expect_map "CFG.AUDIT entry $RH" CA .4 layer=replica
expect_map "CFG.AUDIT entry $RI" CA .5 "reason=cas to 40"
t_prev=0
for t in $(jcol CA . time_ms); do
  [ "$t" -ge "$t_prev" ] || fail "CFG.AUDIT times go backwards: $(jcol CA . time_ms)"
  t_prev=$t
done
now_ms=$(($(now_us) / 1000))
[ $((now_ms - t_prev)) -lt 60000 ] && [ $((t_prev - now_ms)) -lt 1000 ] || fail "CFG.AUDIT time_ms $t_prev is not now ($now_ms)"
cj CA CFG.AUDIT NS platform KEY db.pool SINCE "$RC" UNTIL "$RD"
expect_eq "CFG.AUDIT NS platform KEY db.pool SINCE $RC UNTIL $RD" "$(jcol CA . revision)" "$RC $RD"
cj CA CFG.AUDIT KEY db.pool NEWEST LIMIT 2
expect_eq "CFG.AUDIT KEY db.pool NEWEST LIMIT 2" "$(jcol CA . revision)" "$RI $RH"
cj CA CFG.AUDIT KEY db.pool FROM "$t_prev"
[[ " $(jcol CA . revision) " == *" $RI "* ]] || fail "CFG.AUDIT KEY db.pool FROM $t_prev (the last write's time) lacks $RI"
ok "CFG.AUDIT KEY db.pool lists its 6 writes in order with author, reason, old -> new; SINCE/UNTIL, NEWEST LIMIT, FROM work"

RR=$(expect_int "CFG.ROLLBACK platform db.pool $RC" \
  "$(rc CFG.ROLLBACK platform db.pool "$RC" AUTHOR ops-erin REASON "back to 20")") || exit 1
[ "$RR" -gt "$RI" ] || fail "rollback revision $RR is not a new revision (after $RI)"
cj CG CFG.GET platform db.pool
expect_map "CFG.GET platform db.pool after rollback" CG . value=20 mod_revision="$RR" create_revision="$R_POOL"
cj CA CFG.AUDIT KEY db.pool NEWEST LIMIT 1
expect_map "CFG.AUDIT rollback entry" CA .0 revision="$RR" op=rollback ns=platform old=40 new=20 rollback_to="$RC" \
  author=ops-erin "reason=back to 20"
cj CW CFG.WATCH billing SINCE "$RI" TIMEOUT 0
expect_eq "CFG.WATCH billing SINCE $RI after rollback" "$(jcol CW .1 revision)" "$RR"
expect_map "watch event of the rollback" CW .1.0 op=rollback old=40 new=20
RR2=$(expect_int "CFG.ROLLBACK platform pool.mode $((RN - 1))" \
  "$(rc CFG.ROLLBACK platform pool.mode $((RN - 1)) AUTHOR ops-erin REASON undo)") || exit 1
expect_eq "CFG.GET of a key rolled back to before it existed" "$(rc CFG.GET platform pool.mode)" "(nil)"
cj CA CFG.AUDIT KEY pool.mode
expect_eq "CFG.AUDIT KEY pool.mode revisions" "$(jcol CA . revision)" "$RN $RR2"
expect_map "CFG.AUDIT pool.mode rollback" CA .1 op=rollback old=strict new="(nil)" rollback_to=$((RN - 1))
ok "CFG.ROLLBACK db.pool to $RC: 20 again as new revision $RR (audited: op rollback, 40 -> 20, by ops-erin; billing notified)"
ok "CFG.ROLLBACK pool.mode to before it existed deleted it (rev $RR2)"

expect_eq "SESSION.CLOSE billing" "$(rc SESSION.CLOSE "$CSB")" OK
expect_eq "SESSION.CLOSE search" "$(rc SESSION.CLOSE "$CSS")" OK

# What must survive restarts: values, revision, history, registered targets.
cfg_snapshot() {
  local ns
  echo "revision $(rc CFG.REVISION)"
  for ns in platform svc/billing svc/billing/1 svc/search; do echo "list $ns $(rj CFG.LIST "$ns")"; done
  echo "dump billing/1 $(rj CFG.DUMP billing/1)"
  echo "dump search $(rj CFG.DUMP search)"
  echo "targets $(rj CFG.TARGETS)"
  echo "audit $(rj CFG.AUDIT LIMIT 1000)"
  echo "watch billing $(rj CFG.WATCH billing SINCE "$REV0" TIMEOUT 0)"
}
check_cfg_survived() {
  local what=$1 now t
  now=$(cfg_snapshot)
  [ "$now" = "$CFG_SNAP" ] || fail "config after $what differs from before: $(diff <(echo "$CFG_SNAP") <(echo "$now"))"
  expect_eq "CFG.REVISION after $what" "$(cfg_rev)" "$CFG_REV"
  cj CE CFG.EFFECTIVE billing/1 log.level
  expect_map "CFG.EFFECTIVE billing/1 log.level after $what" CE . value=debug layer=service
  cj CD CFG.DRYRUN platform db.pool 21 ALL
  imp=$(jkey CD . impacts)
  at=$(jfind CD "$imp" service billing replica "") || fail "CFG.DRYRUN after $what does not name billing"
  expect_map "CFG.DRYRUN ALL after $what, billing" CD "$at" effect=changes old=20 new=21
  at=$(jfind CD "$imp" service billing replica 1) || fail "CFG.DRYRUN after $what does not name billing/1"
  expect_map "CFG.DRYRUN ALL after $what, billing/1" CD "$at" effect=overridden overridden_by=replica old=7
  at=$(jfind CD "$imp" service search replica "") || fail "CFG.DRYRUN after $what does not name search"
  expect_map "CFG.DRYRUN ALL after $what, search" CD "$at" effect=overridden overridden_by=service old=5
  ok "after $what: CFG.REVISION $CFG_REV; values, lists, audit log, targets and watch history as before"
  ok "after $what: a dry run still names billing (20 -> 21), billing/1 and search (overridden), their sessions long gone"
}

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

CFG_REV=$(cfg_rev) || exit 1
CFG_SNAP=$(cfg_snapshot)
stop_coord TERM
start_coord
check_cfg_survived "SIGTERM and restart"
RX=$(cfg_set "CFG.SET after the restart" platform after.restart yes AUTHOR ops-frank REASON "after a restart") || exit 1
expect_eq "revision of the first write after the restart" "$RX" "$((CFG_REV + 1))"
ok "the first config write after the restart gets the next revision ($RX)"
info=$(rc INFO)
grep -q '^loading:0' <<<"${info//$'\r'/}" || fail "INFO after restart lacks loading:0"
grep -q "^boot:$BOOTS\$" <<<"${info//$'\r'/}" || fail "INFO after restart does not say boot:$BOOTS (a start that could not bind counts none): $info"
expect_prefix "session of the previous boot" "$(rc SESSION.INFO "$A")" "(error) NOSESSION"
ok "after SIGTERM + restart: INFO loading:0 boot:$BOOTS, old session $A unknown"
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

RK=$(cfg_set "CFG.SET before SIGKILL" platform before.kill yes AUTHOR ops-frank REASON "just before a crash") || exit 1
CFG_REV=$(cfg_rev) || exit 1
CFG_SNAP=$(cfg_snapshot)
stop_coord KILL
start_coord
check_cfg_survived "SIGKILL and restart"
cj CG CFG.GET platform before.kill
expect_map "CFG.GET platform before.kill after SIGKILL" CG . value=yes mod_revision="$RK"
cj CG CFG.GET platform after.restart
expect_map "CFG.GET platform after.restart after SIGKILL" CG . value=yes mod_revision="$RX"
ok "the config writes acknowledged before SIGKILL (revs $RX, $RK) survived the crash"
info=$(rc INFO)
grep -q '^loading:0' <<<"${info//$'\r'/}" || fail "INFO after crash restart lacks loading:0"
grep -q "^boot:$BOOTS\$" <<<"${info//$'\r'/}" || fail "INFO after crash restart does not say boot:$BOOTS: $info"
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
