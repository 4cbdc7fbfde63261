#!/usr/bin/env bash
# libravel installs with headers and a pkg-config file, and a program built
# against the installed copy only (shared and static) links and runs.
# Usage: check_install.sh <source dir> <build dir>
set -euo pipefail
build=${2:?usage: check_install.sh <source dir> <build dir>}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
pcdir=$(dirname "$(find "$tmp/prefix" -name ravel.pc | head -n1)")
[ -n "$pcdir" ] || { echo "ravel.pc not installed"; exit 1; }
export PKG_CONFIG_PATH="$pcdir"
cat >"$tmp/hello.c" <<'C'
#include <rt/rt.h>
#include <rt/ctx.h>
#include <obs/dump.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
  rv_thread_adopt("main", "example");
  rv_rwlock rw;
  rv_rwlock_init(&rw, "installed-lock");
  rv_rwlock_rdlock(&rw);
  char *d = rv_dump(rv_registry_current(), RV_DUMP_THREADS, RV_DUMP_TEXT);
  int ok = d && strstr(d, "holds rwlock \"installed-lock\" (read)") != NULL;
  free(d);
  rv_rwlock_rdunlock(&rw);
  rv_ctx *ctx = rv_ctx_new(NULL);
  rv_ctx_cancel(ctx, "bye");
  ok = ok && rv_sleep(ctx, RV_NS_PER_S) == RV_ECANCELED;
  rv_ctx_free(ctx);
  puts(ok ? "installed libravel works" : "installed libravel misbehaves");
  return ok ? 0 : 1;
}
C
# Build the example the way the library was built: same compiler, same sanitizer.
cache="$build/CMakeCache.txt"
cc=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$cache")
cc=${cc:-cc}
san=""
grep -q '^RAVEL_SANITIZE:BOOL=ON' "$cache" && san="-fsanitize=address,undefined"
grep -q '^RAVEL_TSAN:BOOL=ON' "$cache" && san="-fsanitize=thread"
cc="$cc $san"
# Shared: the default link.
$cc -std=gnu17 -o "$tmp/hello-shared" "$tmp/hello.c" $(pkg-config --cflags --libs ravel)
LD_LIBRARY_PATH="$(pkg-config --variable=libdir ravel)" "$tmp/hello-shared"
# Static libravel (its dependencies stay shared: Debian ships no static gnutls).
$cc -std=gnu17 -o "$tmp/hello-static" "$tmp/hello.c" $(pkg-config --cflags ravel) \
  "$(pkg-config --variable=libdir ravel)/libravel.a" $(pkg-config --libs libmicrohttpd jansson libuv sqlite3 hiredis libcurl) -lpthread -lm
"$tmp/hello-static"
if ldd "$tmp/hello-static" | grep -q libravel; then
  echo "static build linked libravel.so"; exit 1
fi
echo "install: shared and static builds against the installed libravel work"
