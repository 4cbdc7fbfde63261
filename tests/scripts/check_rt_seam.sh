#!/usr/bin/env bash
# The rt seam: no code outside src/rt/ may call the OS primitives rt wraps
# (threads, clocks, sleeping, sockets, libc randomness).  Code above rt must
# run unchanged under the simulator, so such a call is a leak in the seam.
#
# Files too (rt/fs.h): in the directories whose code runs under the simulator
# (src/storage, src/server, src/core, src/client, src/sim) no raw file call
# (open, pread, pwrite, fsync, fdatasync, rename, unlink, ftruncate,
# opendir, mkdir, fopen, stat, ...): those would reach the real disk and
# bypass the simulated one.  The CLI, diag and the reference service's
# snapshots may use stdio/POSIX.  A line that must touch the host's files
# on purpose (and never runs inside a simulated world) says so with the
# comment "rt-seam: host-fs" on that line; HOST_FS_FILES lists whole files.
# configdb.c (SQLite, which does its own file I/O) is outside the rule's
# reach: it has no raw calls of its own.
#
# The check first proves on planted violations that it can fail.
# Usage: check_rt_seam.sh SOURCE_DIR [BUILD_DIR]
set -euo pipefail
src=${1:?source dir}

# Directories under the file rule, and files in them allowed the host's disk (with why).
FILE_RULE_DIRS='^src/(storage|server|core|client|sim)/'
HOST_FS_FILES=(
  src/sim/common.c # the stage's real temp directory (SQLite) and the diagnosis collection
  src/sim/spec.c   # scenario files are read from the host before a world runs
)

# scan DIR: print file:line:code for each line of code outside DIR/src/rt/,
# comments and strings removed; a line carrying the host-fs marker starts with @HOSTFS@.
scan() {
  local dir=$1
  (cd "$dir" && find src tests bench -name '*.[ch]' 2>/dev/null | grep -v '^src/rt/' | sort) |
    while read -r f; do
      # Mark host-fs lines, then drop string literals, // comments and /* */ comments (also across lines).
      sed -e 's#^.*rt-seam: host-fs.*$#@HOSTFS@ &#' -e 's#"\([^"\\]\|\\.\)*"#""#g' -e 's#//.*$##' "$dir/$f" | awk -v f="$f" '
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
    done
}

# Calls, and thread-local storage: under the simulator every simulated thread
# shares the one OS thread's _Thread_local; code above rt uses rv_thread_slot.
pattern='(^|[^a-zA-Z0-9_.>])((pthread_[a-z_]+|clock_gettime|gettimeofday|nanosleep|usleep|sleep|socket|accept4?|connect|rand|srand|random|srandom|rand_r|drand48|time)[[:space:]]*\(|(_Thread_local|__thread|thread_local)[[:space:]])'
# Raw file calls (the file rule).
file_pattern='(^|[^a-zA-Z0-9_.>])(open|openat|creat|close|read|write|pread|pwrite|preadv|pwritev|lseek|fsync|fdatasync|syncfs|sync_file_range|rename|renameat2?|unlink|unlinkat|remove|ftruncate|truncate|opendir|fdopendir|readdir|closedir|mkdir|mkdirat|rmdir|mkdtemp|mkstemp|tmpfile|fopen|freopen|fdopen|stat|lstat|fstat|fstatat|access|faccessat|nftw|link|symlink|flock)[[:space:]]*\('

# violations DIR: every hit of either rule.
violations() {
  local code host_files
  code=$(scan "$1")
  host_files=$(printf '%s\n' "${HOST_FS_FILES[@]}" | sed 's/[[:space:]]*#.*$//; s/[.]/[.]/g; s/^/^/; s/$/:/')
  { grep -E "$pattern" <<<"$code" || true
    grep -E "$FILE_RULE_DIRS" <<<"$code" | grep -vF '@HOSTFS@' | grep -vE -f <(printf '%s\n' "$host_files") |
      grep -E "$file_pattern" || true
  } | sort -t: -k1,1 -k2,2n
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
# The file rule: raw file calls in src/storage are found, in the CLI or behind the marker they are not.
mkdir -p "$tmp/src/storage" "$tmp/src/cli" "$tmp/src/server" "$tmp/src/sim"
cat >"$tmp/src/storage/bad.c" <<'C'
int f(int fd) { rv_file_sync(f); rv_fs_rename("a", "b"); /* fsync(fd) */
  return fdatasync(fd) + rename("a", "b"); }
void g(void) { FILE *x = fopen("state", "r"); obj->open(1); }
C
echo 'void h(void) { FILE *f = fopen("out.html", "w"); mkdir("d", 0755); }' >"$tmp/src/cli/ok.c"
echo 'void i(void) { FILE *f = fopen("/proc/statm", "r"); } /* rt-seam: host-fs (never simulated) */' \
  >"$tmp/src/server/ok.c"
echo 'void j(void) { char d[] = "x"; mkdtemp(d); }' >"$tmp/src/sim/common.c"
planted=$(violations "$tmp")
if [ "$(printf '%s\n' "$planted" | grep -c .)" != 4 ] || ! grep -q 'obs/bad.c:3' <<<"$planted" ||
   ! grep -q 'obs/bad.c:4' <<<"$planted" || ! grep -q 'storage/bad.c:2' <<<"$planted" ||
   ! grep -q 'storage/bad.c:3' <<<"$planted"; then
  echo "check_rt_seam self-test failed: expected exactly src/obs/bad.c:3 and :4 and"
  echo "src/storage/bad.c:2 and :3, got:"
  printf '%s\n' "$planted"
  exit 1
fi

hits=$(violations "$src")
if [ -n "$hits" ]; then
  echo "rt seam violated: these call OS primitives, use thread-local storage outside src/rt/,"
  echo "or touch files directly where code runs under the simulator"
  echo "(use rt/rt.h instead: rv_now_ns, rv_sleep, rv_thread_*, rv_tcp_*, rv_thread_slot;"
  echo "and rt/fs.h: rv_file_*, rv_fs_*; or mark a deliberate host file access \"rt-seam: host-fs\"):"
  printf '%s\n' "$hits"
  exit 1
fi
echo "rt seam: clean ($(cd "$src" && find src tests bench -name '*.[ch]' 2>/dev/null | grep -vc '^src/rt/') files checked outside src/rt/)"
