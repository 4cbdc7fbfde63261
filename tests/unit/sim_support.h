/*
 * What the simulator's unit tests share.  Simulated threads are coroutines on
 * the test's OS thread, so cmocka's asserts (which longjmp) are never called
 * inside them: they record the first thing that went wrong with CHECK, and
 * the test asserts after rv_sim_run returns (run_to_end fails with it).
 */
#ifndef RAVEL_TESTS_SIM_SUPPORT_H
#define RAVEL_TESTS_SIM_SUPPORT_H

#include "support.h"

#include "rt/sim.h"

#include <stdio.h>

static char failure[256];
#define CHECK(cond)                                                                         \
  do {                                                                                      \
    if (!(cond) && !failure[0])                                                             \
      snprintf(failure, sizeof failure, "%s:%d: %s", __FILE__, __LINE__, #cond);           \
  } while (0)

/* A new world for seed (faults: NULL for none); clears the recorded failure. */
static inline rv_sim_world *world_new_faults(uint64_t seed, const rv_sim_faults *f) {
  failure[0] = 0;
  rv_sim_world *w;
  rv_sim_opts o = {.seed = seed};
  if (f)
    o.faults = *f;
  assert_int_equal(rv_sim_world_new(&w, &o), RV_OK);
  return w;
}

static inline rv_sim_world *world_new(uint64_t seed) { return world_new_faults(seed, NULL); }

/* Run until every thread ended (before until); fail with what a thread recorded. */
static inline void run_to_end(rv_sim_world *w, int64_t until) {
  int rc = rv_sim_run(w, until);
  if (failure[0])
    fail_msg("%s", failure);
  assert_int_equal(rc, RV_OK);
  assert_int_equal(rv_sim_threads_alive(w), 0);
}

/* In a simulated thread of srv: accept one connection on port and echo it until EOF. */
static inline void echo_one_connection(rv_sim_proc *srv, uint16_t port) {
  rv_listener *l;
  CHECK(rv_tcp_listen(&l, rv_sim_proc_addr(srv), port, 8) == RV_OK);
  rv_conn *c;
  CHECK(rv_listener_accept(l, &c, NULL) == RV_OK);
  char buf[64];
  ssize_t n;
  while ((n = rv_conn_read(c, buf, sizeof buf, NULL)) > 0)
    CHECK(rv_conn_write_all(c, buf, (size_t)n, NULL) == RV_OK);
  rv_conn_close(c);
  rv_listener_close(l);
}

#endif
