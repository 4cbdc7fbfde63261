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

#endif
