// ctest-timeout: 240
/*
 * The simulator's "service" scenario (sim/scenario.h, src/sim/service.c): the
 * incident of ../shared/INCIDENT.md in virtual time, with the real coord and
 * queue servers, replicas of the real reference service, the demo's load
 * generator and the platform team's config writes.
 *
 * The incident must be found and its cycle named by unravel's diagnosis of
 * the simulated world; each single fix must behave as INCIDENT.md (and
 * tests/scripts/check_demo_fixes.sh on real processes) says; every fix must
 * pass every property; a seed must give the same run twice.  Most runs use a
 * 5 s message timeout, short windows and 10 messages in flight per replica
 * to stay quick under the sanitizers (a run stopped at a violation abandons
 * its threads, and LeakSanitizer scans each one's stack at exit); the first
 * uses the incident's real 30 s timeout.
 */
#include "support.h"

#include "sim/scenario.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The incident, compressed where a test does not need the real timings. */
static void opts_short(rv_sim_service_opts *o, uint64_t seed, bool incident) {
  rv_sim_service_defaults(o);
  o->seed = seed;
  o->msg_timeout_ms = 5000;
  o->max_in_flight = 10; /* fewer threads to abandon at a violation (ASan's leak check scans each) */
  o->config_at_ns = 10 * RV_NS_PER_S;
  o->config_writes = 5;
  o->virtual_ns = 40 * RV_NS_PER_S;
  for (int b = 0; b < RV_SVC_BUG_COUNT; b++)
    o->bugs[b] = incident;
}

static rv_sim_service_result *run(const rv_sim_service_opts *o) {
  rv_sim_service_result *r = calloc(1, sizeof *r);
  assert_non_null(r);
  assert_int_equal(rv_sim_service_run(o, r), RV_OK);
  return r;
}

static void expect_ok(const rv_sim_service_result *r, const char *what) {
  if (!r->ok)
    fail_msg("%s: %s\n%s\n%s", what, r->violation, r->diagnosis, r->trace);
}

/* The incident's cycle, named by unravel: a handler holding the client-cache read lock
 * and a distributed lock, waiting to read-lock it again behind coord-watch. */
static void expect_incident_cycle(const rv_sim_service_result *r) {
  assert_false(r->ok);
  assert_non_null(strstr(r->violation, "deadlock"));
  const char *d = r->diagnosis;
  if (!strstr(d, "DEADLOCK 1") || !strstr(d, "\"coord-watch\"") ||
      !strstr(d, "waits to read-lock \"client-cache\" again") ||
      !strstr(d, "holds the distributed lock \"acct-"))
    fail_msg("the diagnosis does not name the incident's cycle:\n%s", d);
  /* coord's holder descriptions (simulated pid, registry thread id) joined to the dumps:
   * the other replicas' waiters are counted behind the stuck handler, by process. */
  if (!strstr(d, "(in the deadlock)") || !strstr(d, "billing/1") || !strstr(d, "billing/3"))
    fail_msg("the diagnosis does not join coord's holders and waiters to the replicas:\n%s", d);
}

static void test_incident_fixed_seed(void **state) {
  rv_sim_service_opts o;
  rv_sim_service_defaults(&o); /* 30 s message timeouts, as in production */
  o.seed = 1;
  o.config_at_ns = 20 * RV_NS_PER_S;
  o.virtual_ns = 120 * RV_NS_PER_S;
  o.max_in_flight = 10;
  o.stop_at_violation = true;
  o.check_threads = false; /* the pile-up comes first: test_incident_pile_up */
  for (int b = 0; b < RV_SVC_BUG_COUNT; b++)
    o.bugs[b] = true;
  rv_sim_service_result *r = run(&o);
  expect_incident_cycle(r);
  /* Lasting: more than two message timeouts after the cycle formed. */
  assert_true(r->first_cycle_at >= o.config_at_ns);
  assert_true(r->violation_at >= r->first_cycle_at + 60 * RV_NS_PER_S);
  free(r);
}

static void test_incident_sweep(void **state) {
  int found = 0;
  for (uint64_t seed = 1; seed <= 5; seed++) {
    rv_sim_service_opts o;
    opts_short(&o, seed, true);
    o.stop_at_violation = true;
    o.check_threads = false;
    rv_sim_service_result *r = run(&o);
    if (!r->ok && strstr(r->violation, "deadlock")) {
      expect_incident_cycle(r);
      found++;
    }
    free(r);
  }
  if (found < 4)
    fail_msg("the incident was found for %d of 5 seeds", found);
}

/* The other symptom: handler threads pile up past max_in_flight (the held and cancel bugs);
 * the diagnosis at that moment already names the cycle. */
static void test_incident_pile_up(void **state) {
  rv_sim_service_opts o;
  opts_short(&o, 1, true);
  o.stop_at_violation = true;
  rv_sim_service_result *r = run(&o);
  assert_false(r->ok);
  if (!strstr(r->violation, "handler threads"))
    fail_msg("expected the pile-up, got: %s", r->violation);
  assert_non_null(strstr(r->diagnosis, "DEADLOCK 1"));
  free(r);
}

/* One fix, every other bug on (check_demo_fixes.sh's runs). */
static rv_sim_service_result *run_fix(enum rv_svc_bug fix, uint64_t seed,
                                      void (*tune)(rv_sim_service_opts *)) {
  rv_sim_service_opts o;
  opts_short(&o, seed, true);
  o.bugs[fix] = false;
  o.check_deadlock = o.check_threads = o.check_fencing = o.check_liveness = false;
  tune(&o);
  return run(&o);
}

static void tune_release(rv_sim_service_opts *o) { o->check_deadlock = o->check_fencing = true; }
static void tune_rebuild(rv_sim_service_opts *o) {
  o->check_deadlock = o->check_fencing = o->check_no_rebuild = true;
}
static void tune_cancel(rv_sim_service_opts *o) {
  o->check_deadlock = o->check_threads = o->check_fencing = true;
}
static void tune_held(rv_sim_service_opts *o) { o->check_threads = o->check_fencing = true; }
/* As check_demo_fixes.sh: no config change at all, and the finding is still made. */
static void tune_detect(rv_sim_service_opts *o) {
  o->config_writes = 0;
  o->virtual_ns = 10 * RV_NS_PER_S;
  o->check_detect = o->check_deadlock = true;
}

static void test_fix_release(void **state) {
  for (uint64_t seed = 1; seed <= 2; seed++) {
    rv_sim_service_result *r = run_fix(RV_SVC_BUG_RELEASE, seed, tune_release);
    expect_ok(r, "--fix release");
    assert_int_equal(r->recursive_reads, 0);
    free(r);
  }
}

static void test_fix_rebuild(void **state) {
  for (uint64_t seed = 1; seed <= 2; seed++) {
    rv_sim_service_result *r = run_fix(RV_SVC_BUG_REBUILD, seed, tune_rebuild);
    expect_ok(r, "--fix rebuild");
    assert_int_equal(r->rebuilds, 0);
    assert_true(r->platform_writes == 5);
    free(r);
  }
}

static void test_fix_cancel(void **state) {
  for (uint64_t seed = 1; seed <= 2; seed++) {
    rv_sim_service_result *r = run_fix(RV_SVC_BUG_CANCEL, seed, tune_cancel);
    expect_ok(r, "--fix cancel");
    assert_true(r->timeouts > 0); /* the cycles formed and were broken at the timeout */
    free(r);
  }
}

static void test_fix_held(void **state) {
  for (uint64_t seed = 1; seed <= 2; seed++) {
    rv_sim_service_result *r = run_fix(RV_SVC_BUG_HELD, seed, tune_held);
    expect_ok(r, "--fix held");
    free(r);
  }
}

static void test_fix_detect(void **state) {
  rv_sim_service_result *r = run_fix(RV_SVC_BUG_DETECT, 1, tune_detect);
  expect_ok(r, "--fix detect");
  assert_true(r->recursive_reads > 0);
  free(r);
}

static void test_all_fixes(void **state) {
  for (uint64_t seed = 1; seed <= 3; seed++) {
    rv_sim_service_opts o;
    opts_short(&o, seed, false);
    o.check_no_rebuild = true;
    o.partitions = seed == 3; /* and once under partitions */
    rv_sim_service_result *r = run(&o);
    expect_ok(r, "every fix");
    assert_true(r->published > 0);
    assert_true(r->finished >= r->published);
    assert_true(r->max_handlers <= o.max_in_flight + RV_SIM_SERVICE_HANDLER_SLACK);
    free(r);
  }
}

static void test_determinism(void **state) {
  rv_sim_service_opts o;
  opts_short(&o, 7, true);
  o.stop_at_violation = true;
  rv_sim_service_result *a = run(&o), *b = run(&o);
  assert_true(a->events > 0);
  assert_int_equal(a->hash, b->hash);
  assert_int_equal(a->events, b->events);
  assert_int_equal(a->violation_at, b->violation_at);
  free(a);
  free(b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_incident_fixed_seed), cmocka_unit_test(test_incident_sweep),
      cmocka_unit_test(test_incident_pile_up),
      cmocka_unit_test(test_fix_release),         cmocka_unit_test(test_fix_rebuild),
      cmocka_unit_test(test_fix_cancel),          cmocka_unit_test(test_fix_held),
      cmocka_unit_test(test_fix_detect),          cmocka_unit_test(test_all_fixes),
      cmocka_unit_test(test_determinism),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
