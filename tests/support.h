/*
 * Helpers shared by ravel's C tests.  Tests decide by observed state, never by
 * sleeping and hoping: rvt_await_wait polls the registry until a thread is
 * seen blocked in the expected call, with a generous bound that only a real
 * hang exceeds.
 */
#ifndef RAVEL_TEST_SUPPORT_H
#define RAVEL_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "obs/registry.h"
#include "rt/ctx.h"
#include "rt/rt.h"

/* Bound for "this must happen": far above any real latency, below the CTest timeout. */
#define RVT_BOUND_NS (20 * RV_NS_PER_S)
#define RVT_POLL_NS (1 * RV_NS_PER_MS)

/* Wait until thread t is blocked in `kind` (as the registry shows); false on bound. */
static inline bool rvt_await_wait(const rv_thread *t, rv_wait_kind kind) {
  int64_t until = rv_now_ns() + RVT_BOUND_NS;
  uint64_t id = rv_thread_id(t);
  while (rv_now_ns() < until) {
    rv_snapshot *s = rv_snapshot_take(rv_registry_current());
    bool seen = false;
    for (size_t i = 0; s && i < s->nthreads; i++)
      if (s->threads[i].id == id && s->threads[i].wait.kind == kind)
        seen = true;
    rv_snapshot_free(s);
    if (seen)
      return true;
    rv_sleep(NULL, RVT_POLL_NS);
  }
  return false;
}

/* Wait until pred(arg) is true; false on bound. */
static inline bool rvt_await(bool (*pred)(void *), void *arg) {
  int64_t until = rv_now_ns() + RVT_BOUND_NS;
  while (rv_now_ns() < until) {
    if (pred(arg))
      return true;
    rv_sleep(NULL, RVT_POLL_NS);
  }
  return false;
}

/*
 * A minimal HTTP/1.0 GET or POST over rt's TCP, for tests of the admin
 * server: returns the status code and a malloc'd body, or -1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static inline int rvt_http(uint16_t port, const char *method, const char *path, const char *body,
                           char **out_body) {
  rv_conn *c;
  *out_body = NULL;
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, RVT_BOUND_NS);
  if (rv_tcp_connect(&c, "127.0.0.1", port, ctx) != RV_OK) {
    rv_ctx_free(ctx);
    return -1;
  }
  char req[1024];
  int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: %zu\r\n\r\n",
                   method, path, body ? strlen(body) : 0);
  int status = -1;
  if (rv_conn_write_all(c, req, (size_t)n, ctx) == RV_OK &&
      (!body || rv_conn_write_all(c, body, strlen(body), ctx) == RV_OK)) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    ssize_t r;
    while (buf && (r = rv_conn_read(c, buf + len, cap - len, ctx)) > 0) {
      len += (size_t)r;
      if (len == cap) {
        char *nb = realloc(buf, (cap *= 2) + 1);
        if (!nb)
          break;
        buf = nb;
      }
    }
    if (buf) {
      buf[len] = 0;
      char *sep = strstr(buf, "\r\n\r\n");
      if (sep && sscanf(buf, "HTTP/1.%*d %d", &status) == 1) {
        *out_body = strdup(sep + 4);
      }
      free(buf);
    }
  }
  rv_conn_close(c);
  rv_ctx_free(ctx);
  return status;
}

#endif
