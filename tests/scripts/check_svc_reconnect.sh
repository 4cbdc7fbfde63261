#!/usr/bin/env bash
# ctest-timeout: 120
# A replica outlives a restart of coord and queue (`ravel up` stopped and
# started again on the same ports and data): coord forgets every session, so
# the replica's session is lost; the replica opens a new one (it shows in
# SESSION.LIST again, with its admin URL) and goes on handling events, which
# needs both its distributed locks (new session) and its consumer (reconnected).
# Usage: check_svc_reconnect.sh <source dir> <build dir>
set -uo pipefail
build=${2:?usage: check_svc_reconnect.sh <source dir> <build dir>}
bin="$build/ravel"
. "$(dirname "$0")/lib.sh"
lib_init svc-reconnect

start_up --sync always
start_svc 1 --upstream-latency 1
handled_at_least() {  # N: poll (<= 30 s) until the replica has finished N events
  for _ in $(seq 1 300); do
    [ "$(metric "$aport" ravel_svc_messages_total)" -ge "$1" ] 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
for i in 1 2 3 4 5; do pub "acct-$i a b" || fail "publish $i"; done
handled_at_least 5 || fail "the replica did not handle the first 5 events"
sessions=$(redis-cli -p "$cport" SESSION.LIST)
grep -q "http://127.0.0.1:$aport/" <<<"$sessions" || fail "the replica's session is not in SESSION.LIST"
echo "ok: the replica registered and handled 5 events"

restart_up --sync always
reopened=0
for _ in $(seq 1 300); do   # <= 30 s: the keepalive notices, the replica opens a new session
  redis-cli -p "$cport" SESSION.LIST 2>/dev/null | grep -q "http://127.0.0.1:$aport/" && { reopened=1; break; }
  sleep 0.1
done
[ $reopened = 1 ] || fail "the replica did not open a new coord session after coord restarted"
[ "$(metric "$aport" ravel_svc_session_reopens_total)" -ge 1 ] 2>/dev/null \
  || fail "ravel_svc_session_reopens_total did not count the reopen"
echo "ok: coord restarted; the replica opened a new session"

for i in 6 7 8 9 10; do pub "acct-$i a b" || fail "publish $i after the restart"; done
handled_at_least 10 || fail "the replica did not handle events after the restart (handled $(metric "$aport" ravel_svc_messages_total))"
echo "ok: events after the restart are handled (locks through the new session, consumer reconnected)"
stop_pid "$svc" 10
[ "$rc" = 0 ] || fail "ravel svc exited $rc on SIGTERM"
echo "ravel svc: survives a restart of coord and queue"
