#!/usr/bin/env bash
# ctest-timeout: 180
# `ravel svc`: the incident's reference service against `ravel up`.
#  1. With every fix (the default): 50 events on one resource are all
#     finished, and platform writes that billing overrides rebuild nothing.
#  2. With --bug release (detection on): the recursive read is reported at once.
#  3. With --incident: events on one resource plus platform writes deadlock
#     the replica's client cache; /debug/threads names the cycle.
# Decides by metrics and dumps, polled with bounded deadlines.
# Usage: check_svc.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_svc.sh <source dir> <build dir>}
bin="$build/ravel"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ravel-svc.XXXXXX")
up=""; svc=""; pubber=""
cleanup() {
  [ -n "$pubber" ] && kill -KILL "$pubber" 2>/dev/null
  [ -n "$svc" ] && kill -KILL "$svc" 2>/dev/null
  [ -n "$up" ] && kill -KILL "$up" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in up.err svc.err; do [ -f "$tmp/$f" ] && { echo "--- $f" >&2; tail -n 20 "$tmp/$f" >&2; }; done
  exit 1
}

# ---- ravel up on free ports -----------------------------------------------------------------
started=0
for attempt in 1 2 3 4 5 6 7 8 9 10; do
  cport=$(shuf -i 20000-29999 -n 1); caport=$(shuf -i 30000-39999 -n 1)
  tport=$(shuf -i 40000-49999 -n 1); hport=$(shuf -i 50000-59999 -n 1)
  "$bin" up --data "$tmp/data" --coord-port "$cport" --coord-admin-port "$caport" \
    --tcp-port "$tport" --http-port "$hport" --sync none >"$tmp/up.out" 2>"$tmp/up.err" &
  up=$!
  for _ in $(seq 1 200); do   # up to 10 s
    grep -q '^ravel up:' "$tmp/up.out" && { started=1; break; }
    kill -0 "$up" 2>/dev/null || break
    sleep 0.05
  done
  [ $started = 1 ] && break
  kill -KILL "$up" 2>/dev/null; wait "$up" 2>/dev/null; up=""
  grep -q 'in use' "$tmp/up.err" || fail "ravel up did not start"
done
[ $started = 1 ] || fail "ravel up did not start on free ports after 10 attempts"

cfg() { redis-cli -p "$cport" CFG.SET "$1" upstream.url "$2" AUTHOR test >/dev/null || fail "CFG.SET $1"; }
pub() { [ "$(curl -s -d "$1" "http://127.0.0.1:$hport/pub?topic=events")" = OK ]; }
# metric NAME: its value on the svc's /metrics (empty if absent)
metric() {
  curl -s --max-time 5 "http://127.0.0.1:$aport/metrics" |
    awk -v n="$1" '$1 ~ "^"n"[{]" { print $2; exit }'
}

# start_svc ARGS...: start a replica, wait (<= 10 s) for its start line, set aport.
start_svc() {
  : >"$tmp/svc.out"
  "$bin" svc --replica 1 --coord "127.0.0.1:$cport" --queue "127.0.0.1:$tport" "$@" \
    >"$tmp/svc.out" 2>"$tmp/svc.err" &
  svc=$!
  aport=""
  for _ in $(seq 1 200); do
    line=$(grep -m1 '^svc: replica 1 admin http://127.0.0.1:[0-9]*/ service billing$' "$tmp/svc.out")
    [ -n "$line" ] && { aport=$(echo "$line" | sed 's#.*127.0.0.1:\([0-9]*\)/.*#\1#'); break; }
    kill -0 "$svc" 2>/dev/null || break
    sleep 0.05
  done
  [ -n "$aport" ] || fail "ravel svc $* did not print its start line"
  [ "$(curl -s "http://127.0.0.1:$aport/healthz")" = ok ] || fail "svc /healthz on $aport"
}

# stop_svc SECONDS: SIGTERM, wait up to SECONDS; sets rc to the exit code.
stop_svc() {
  kill -TERM "$svc"
  for _ in $(seq 1 $(($1 * 20))); do kill -0 "$svc" 2>/dev/null || break; sleep 0.05; done
  kill -0 "$svc" 2>/dev/null && fail "ravel svc did not stop within $1 s of SIGTERM"
  wait "$svc"; rc=$?; svc=""
}

# The service overrides the platform's key: platform writes change nothing for it.
cfg svc/billing https://svc

# ---- 1. every fix ------------------------------------------------------------------------------
start_svc
for i in $(seq 1 50); do pub 'acct-1 a b c' || fail "publish $i"; done
for i in 1 2 3; do cfg platform "https://p$i"; done
done_n=""
for _ in $(seq 1 200); do   # up to 20 s (50 events x 3 items x 20 ms on one lock: ~3 s)
  done_n=$(metric ravel_svc_messages_total)
  [ "$done_n" = 50 ] && break
  sleep 0.1
done
[ "$done_n" = 50 ] || fail "fixed svc finished ${done_n:-?} of 50 events"
# The platform writes were made before the last events were handled, seconds ago.
[ "$(metric ravel_svc_config_rebuilds_total)" = 0 ] || fail "fixed svc rebuilt its client for platform writes that change nothing"
[ "$(metric ravel_svc_cache_waiters)" = 0 ] || fail "threads still wait on the client cache"
stop_svc 10
[ "$rc" = 0 ] || fail "fixed svc exited $rc after SIGTERM"
echo "fixes: 50 of 50 events finished, 0 config rebuilds for 3 platform writes, clean SIGTERM"

# ---- 2. release bug, detection on: reported at the first message, before any config change ------
start_svc --bug release
pub 'acct-2 a b c' || fail "publish (detect)"
rec=""
for _ in $(seq 1 100); do   # up to 10 s
  rec=$(curl -s --max-time 5 "http://127.0.0.1:$aport/debug/threads?format=json" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["recursive_reads"]["total"], len(d["deadlocks"]))' 2>/dev/null)
  [ "${rec%% *}" != "" ] && [ "${rec%% *}" != 0 ] && break
  sleep 0.1
done
[ "${rec%% *}" != "" ] && [ "${rec%% *}" != 0 ] || fail "recursive read not reported with --bug release (detection on)"
[ "${rec##* }" = 0 ] || fail "deadlock without any config change"
grep -q 'msg="recursive read lock" lock="client-cache"' "$tmp/svc.err" || fail "no recursive read warning logged"
stop_svc 10
[ "$rc" = 0 ] || fail "release-bug svc exited $rc after SIGTERM"
echo "detect: the recursive read on client-cache was reported at the first message, no deadlock"

# ---- 3. the incident ---------------------------------------------------------------------------
start_svc --incident --upstream-latency 200
( for _ in $(seq 1 300); do pub 'acct-7 a b c' || true; sleep 0.1; done ) &
pubber=$!
found=0
for i in $(seq 1 60); do   # up to ~30 s; a platform write every half second
  cfg platform "https://q$i"
  if curl -s --max-time 5 "http://127.0.0.1:$aport/debug/threads?format=json" |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["deadlocks"] else 1)' 2>/dev/null; then
    found=1
    break
  fi
  sleep 0.5
done
[ $found = 1 ] || fail "no deadlock reported by /debug/threads within 30 s in --incident mode"
dump=$(curl -s --max-time 5 "http://127.0.0.1:$aport/debug/threads")
echo "$dump" | sed -n '/^DEADLOCK/,$p'
echo "$dump" | sed -n '/^DEADLOCK/,$p' | grep -q 'write-lock "client-cache"' || fail "the cycle does not show the write lock on client-cache"
echo "$dump" | sed -n '/^DEADLOCK/,$p' | grep -q 'read-lock "client-cache"' || fail "the cycle does not show the read lock on client-cache"
# The watcher reacted to the no-op platform writes (its first rebuild may be the one stuck in the cycle).
[ "$(metric ravel_svc_config_events_total)" != 0 ] || fail "--incident svc saw no config notification"
echo "incident: cache_waiters=$(metric ravel_svc_cache_waiters) handler_threads=$(metric ravel_svc_handler_threads) dlock_acquisitions_in_progress=$(metric ravel_svc_dlock_acquisitions_in_progress)"
kill -KILL "$pubber" 2>/dev/null; wait "$pubber" 2>/dev/null; pubber=""
stop_svc 15   # 3: handlers stayed deadlocked; it exits without joining them
[ "$rc" = 0 ] || [ "$rc" = 3 ] || fail "--incident svc exited $rc after SIGTERM"
echo "ravel svc: fixed replica healthy; --incident replica deadlocked on client-cache and said so"
