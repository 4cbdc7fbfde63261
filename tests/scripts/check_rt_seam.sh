#!/usr/bin/env bash
# The rt seam: no code outside src/rt/ may call the OS primitives rt wraps
# (threads, clocks, sleeping, sockets, libc randomness).  Code above rt must
# run unchanged under the simulator, so such a call is a leak in the seam.
# The check first proves on a planted violation that it can fail.
# Usage: check_rt_seam.sh SOURCE_DIR [BUILD_DIR]
set -euo pipefail
src=${1:?source dir}

# scan DIR: print file:line:code for each banned call outside DIR/src/rt/.
scan() {
  local dir=$1
  # Calls, and thread-local storage: under the simulator every simulated thread
  # shares the one OS thread's _Thread_local; code above rt uses rv_thread_slot.
  local pattern='(^|[^a-zA-Z0-9_.>])((pthread_[a-z_]+|clock_gettime|gettimeofday|nanosleep|usleep|sleep|socket|accept4?|connect|rand|srand|random|srandom|rand_r|drand48|time)[[:space:]]*\(|(_Thread_local|__thread|thread_local)[[:space:]])'
  (cd "$dir" && find src tests bench -name '*.[ch]' 2>/dev/null | grep -v '^src/rt/' | sort) |
    while read -r f; do
      # Drop // comments, string literals and /* */ comments (also across lines).
      sed -e 's#"\([^"\\]\|\\.\)*"#""#g' -e 's#//.*$##' "$dir/$f" | awk -v f="$f" '
        BEGIN { c = 0 }
        {
          line = $0; out = ""
          while (length(line) > 0) {
            if (c) { i = index(line, "*/"); if (i == 0) { line = ""; break }
                     line = substr(line, i + 2); c = 0 }
            else   { i = index(line, "/*"); if (i == 0) { out = out line; line = "" }
                     else { out = out substr(line, 1, i - 1); line = substr(line, i + 2); c = 1 } }
          }
          if (out !~ /^[[:space:]]*#/) print f ":" NR ":" out
        }'
    done | grep -E "$pattern" || true
}

# Self-test: a planted violation must be found, a comment or a string must not.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src/obs" "$tmp/src/rt"
cat >"$tmp/src/obs/bad.c" <<'C'
/* pthread_mutex_lock(&x) in a comment is fine */
const char *s = "sleep(1) in a string is fine";
void f(void) { obj->connect(1); usleep(10); }
static _Thread_local int last_error;
C
echo 'void g(void) { pthread_create(0,0,0,0); } static _Thread_local int x;' >"$tmp/src/rt/ok.c"
planted=$(scan "$tmp")
if [ "$(printf '%s\n' "$planted" | grep -c .)" != 2 ] || ! grep -q 'bad.c:3' <<<"$planted" ||
   ! grep -q 'bad.c:4' <<<"$planted"; then
  echo "check_rt_seam self-test failed: expected exactly src/obs/bad.c:3 and :4, got:"
  printf '%s\n' "$planted"
  exit 1
fi

hits=$(scan "$src")
if [ -n "$hits" ]; then
  echo "rt seam violated: these call OS primitives or use thread-local storage outside src/rt/"
  echo "(use rt/rt.h instead: rv_now_ns, rv_sleep, rv_thread_*, rv_tcp_*, rv_thread_slot):"
  printf '%s\n' "$hits"
  exit 1
fi
echo "rt seam: clean ($(cd "$src" && find src tests bench -name '*.[ch]' 2>/dev/null | grep -vc '^src/rt/') files checked outside src/rt/)"
