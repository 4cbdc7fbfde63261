/*
 * ravel unravel over hand-written collections (tests/fixtures/unravel/):
 * the incident's shape across three replicas, a cross-process cycle through
 * two distributed locks, a healthy system; and a generated system of
 * thousands of threads, which must be diagnosed well within the 5 s budget.
 */
#define _GNU_SOURCE
#include "support.h"

#include "diag/unravel.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char *fixture(const char *name) {
  const char *src = getenv("RAVEL_SOURCE_DIR");
  char *p = NULL;
  assert_true(asprintf(&p, "%s/tests/fixtures/unravel/%s", src ? src : ".", name) > 0);
  return p;
}

static json_t *analyse(const char *name) {
  char *dir = fixture(name);
  char why[256] = "";
  json_t *r = rv_unravel_dir(dir, &(rv_unravel_opts){0}, why, sizeof why);
  if (!r)
    fail_msg("rv_unravel_dir(%s): %s", dir, why);
  free(dir);
  return r;
}

static void assert_has(const char *text, const char *needle) {
  if (!strstr(text, needle))
    fail_msg("the text lacks \"%s\":\n%s", needle, text);
}

static const json_t *node_by_id(const json_t *r, const char *id) {
  size_t i;
  const json_t *n;
  json_array_foreach(json_object_get(json_object_get(r, "graph"), "nodes"), i, n) {
    if (strcmp(json_string_value(json_object_get(n, "id")), id) == 0)
      return n;
  }
  return NULL;
}

static bool has_edge(const json_t *r, const char *from, const char *to) {
  size_t i;
  const json_t *e;
  json_array_foreach(json_object_get(json_object_get(r, "graph"), "edges"), i, e) {
    if (!strcmp(json_string_value(json_object_get(e, "from")), from) &&
        !strcmp(json_string_value(json_object_get(e, "to")), to))
      return true;
  }
  return false;
}

static void test_incident(void **state) {
  (void)state;
  json_t *r = analyse("incident");
  assert_false(json_is_true(json_object_get(r, "healthy")));
  const json_t *cycles = json_object_get(r, "cycles");
  assert_int_equal(json_array_size(cycles), 1);
  const json_t *threads = json_object_get(json_array_get(cycles, 0), "threads");
  assert_int_equal(json_array_size(threads), 2);
  /* Root first: the handler holding the read lock and the distributed lock. */
  const json_t *t0 = json_array_get(threads, 0), *t1 = json_array_get(threads, 1);
  assert_string_equal(json_string_value(json_object_get(t0, "id")), "billing/1/t30");
  assert_string_equal(json_string_value(json_object_get(t0, "waits_to")), "read-lock");
  assert_string_equal(json_string_value(json_object_get(t0, "blocked_by")), "billing/1/t3");
  assert_string_equal(json_string_value(json_object_get(t1, "id")), "billing/1/t3");
  assert_string_equal(json_string_value(json_object_get(t1, "waits_to")), "write-lock");
  assert_string_equal(json_string_value(json_object_get(t1, "via")), "billing/1/l4");
  assert_true(json_is_true(json_object_get(json_array_get(cycles, 0), "recursive_read")));
  assert_int_equal(json_integer_value(json_object_get(json_array_get(cycles, 0), "blocked_behind")),
                   5);
  const char *text = json_string_value(json_object_get(r, "text"));
  assert_has(text, "DEADLOCK 1: 2 threads in a cycle on billing/1");
  assert_has(text, "billing/1 thread 30 \"handler-26\" holds the read lock on \"client-cache\" "
                   "(acquired at src/svc/svc.c:120) and the distributed lock on \"acct-42\"");
  assert_has(text, "waits to read-lock \"client-cache\" again (at src/svc/svc.c:125) behind the "
                   "writer billing/1 thread 3 \"coord-watch\"");
  assert_has(text, "to release its read lock: a deadlock");
  assert_has(text, "3 threads on billing/2 (2) and billing/3 (1) wait for the distributed lock "
                   "\"acct-42\" held by billing/1 thread 30 \"handler-26\" (in the deadlock)");
  assert_has(text, "1 thread on billing/1 waits to read-lock \"client-cache\"");
  /* A thread waiting for a coord lock connection waits on those blocked in LOCK.ACQUIRE. */
  assert_has(text, "1 thread on billing/2 waits for a free coord lock connection");
  assert_true(has_edge(r, "billing/2/t50", "billing/2/pool"));
  assert_true(has_edge(r, "billing/2/pool", "billing/2/t40"));
  assert_has(text, "9 messages are in flight on them");
  assert_has(text, "21 have timed out and been redelivered");
  assert_has(text, "billing/3 (pid 103, http://127.0.0.1:7503/) did not answer");
  assert_has(text, "VERDICT: UNHEALTHY: 1 deadlock");
  /* The graph: the cycle's nodes are marked, the cross-process edges are there. */
  const json_t *n = node_by_id(r, "billing/1/t30");
  assert_non_null(n);
  assert_true(json_is_true(json_object_get(n, "in_cycle")));
  assert_string_equal(json_string_value(json_object_get(n, "kind")), "thread");
  assert_string_equal(json_string_value(json_object_get(n, "group")), "billing/1");
  n = node_by_id(r, "dlock/acct-42");
  assert_non_null(n);
  assert_false(json_is_true(json_object_get(n, "in_cycle")));
  assert_true(has_edge(r, "billing/2/t40", "dlock/acct-42"));
  assert_true(has_edge(r, "dlock/acct-42", "billing/1/t30"));
  assert_true(has_edge(r, "billing/3/t7", "dlock/acct-42")); /* known from coord only */
  assert_true(has_edge(r, "billing/1/t30", "billing/1/t3")); /* queued behind the writer */
  assert_true(has_edge(r, "billing/1/messages", "billing/1"));
  json_decref(r);
}

static void test_cross_process(void **state) {
  (void)state;
  json_t *r = analyse("crossproc"); /* no manifest: process folders found by their threads.json */
  assert_false(json_is_true(json_object_get(r, "healthy")));
  const json_t *cycles = json_object_get(r, "cycles");
  assert_int_equal(json_array_size(cycles), 1);
  const json_t *c = json_array_get(cycles, 0);
  const json_t *procs = json_object_get(c, "processes");
  assert_int_equal(json_array_size(procs), 2);
  const json_t *nodes = json_object_get(c, "nodes");
  assert_int_equal(json_array_size(nodes), 4); /* two threads, two distributed locks */
  bool t5 = false, t6 = false, da = false, db = false;
  size_t i;
  const json_t *x;
  json_array_foreach(nodes, i, x) {
    const char *id = json_string_value(x);
    t5 |= !strcmp(id, "a/1/t5");
    t6 |= !strcmp(id, "a/2/t6");
    da |= !strcmp(id, "dlock/A");
    db |= !strcmp(id, "dlock/B");
  }
  assert_true(t5 && t6 && da && db);
  assert_int_equal(json_integer_value(json_object_get(c, "blocked_behind")), 2);
  const char *text = json_string_value(json_object_get(r, "text"));
  assert_has(text, "a/1 thread 5 \"worker-1\" waits for a/2 thread 6 \"worker-2\" (dlock B)");
  assert_has(text, "a/2 thread 6 \"worker-2\" waits for a/1 thread 5 \"worker-1\" (dlock A)");
  assert_has(text, "1 thread on a/2 waits to lock \"table\"");
  /* Findings: the lock-order report and the recursive read report, verbatim. */
  assert_has(text, "a/1: lock order: \"index\" then \"journal\" at src/app.c:7");
  assert_has(text, "read-locked \"index\" at src/app.c:4 while holding it from src/app.c:3");
  json_decref(r);
}

/* A collection is not one instant: each process is dumped, then coord is asked.  A thread
 * dumped waiting for a distributed lock that coord's table shows it holding (and not
 * waiting for) was granted in between; a reader dumped waiting with no writer in sight
 * was caught before the writer published its wait; a thread that changed while its
 * process was dumped ("moving") is not blocked.  None of these may make a deadlock. */
static void test_skewed_capture(void **state) {
  (void)state;
  json_t *r = analyse("skewed");
  assert_int_equal(json_array_size(json_object_get(r, "cycles")), 0);
  assert_false(has_edge(r, "a/1/t5", "dlock/A")); /* granted since the dump */
  assert_true(has_edge(r, "dlock/A", "a/1/t5"));
  assert_false(has_edge(r, "a/1/t6", "a/1/l3")); /* no writer: no edge to the read holders */
  assert_true(has_edge(r, "a/1/t8", "dlock/B")); /* a real wait, per coord too */
  assert_true(has_edge(r, "dlock/B", "a/1/t6"));
  assert_true(has_edge(r, "a/1/t9", "a/1/l4"));
  assert_false(has_edge(r, "a/1/t10", "a/1/l2")); /* it moved while dumped: not blocked */
  assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "stats"),
                                                      "granted_since_dump")),
                   1);
  json_decref(r);
}

/* Live, a deadlock is confirmed by a second capture: a cycle whose every wait is the same
 * one (same start) in both stood across them; one with a wait begun in between did not. */
static json_t *analyse_against(const char *name, const char *earlier) {
  char *dir = fixture(name), *then = earlier ? fixture(earlier) : NULL;
  char why[256] = "";
  json_t *r = rv_unravel_dir(dir, &(rv_unravel_opts){.confirm_dir = then}, why, sizeof why);
  if (!r)
    fail_msg("rv_unravel_dir(%s): %s", dir, why);
  free(dir);
  free(then);
  return r;
}

static long long stat_of(const json_t *r, const char *key) {
  return (long long)json_integer_value(json_object_get(json_object_get(r, "stats"), key));
}

static void test_confirmed_by_second_capture(void **state) {
  (void)state;
  json_t *r = analyse_against("confirm/now", NULL);
  assert_int_equal(json_array_size(json_object_get(r, "cycles")), 1);
  json_decref(r);
  r = analyse_against("confirm/now", "confirm/then");
  assert_int_equal(json_array_size(json_object_get(r, "cycles")), 1);
  assert_int_equal(stat_of(r, "unconfirmed_waits"), 0);
  json_decref(r);
  r = analyse_against("confirm/moved", NULL); /* alone, it looks like the same deadlock */
  assert_int_equal(json_array_size(json_object_get(r, "cycles")), 1);
  json_decref(r);
  r = analyse_against("confirm/moved", "confirm/then");
  assert_int_equal(json_array_size(json_object_get(r, "cycles")), 0);
  assert_int_equal(stat_of(r, "unconfirmed_waits"), 1);
  assert_false(has_edge(r, "a/1/t6", "a/1/l2"));
  json_decref(r);
}

static void test_healthy(void **state) {
  (void)state;
  json_t *r = analyse("healthy");
  assert_true(json_is_true(json_object_get(r, "healthy")));
  assert_int_equal(json_array_size(json_object_get(r, "cycles")), 0);
  assert_int_equal(json_array_size(json_object_get(r, "findings")), 0);
  assert_has(json_string_value(json_object_get(r, "text")), "VERDICT: HEALTHY");
  json_decref(r);
}

/* Without a cycle, a long hold with waiters and held slots are still reported. */
static void test_thresholds(void **state) {
  (void)state;
  char *dir = fixture("incident");
  char why[256];
  json_t *r = rv_unravel_dir(dir, &(rv_unravel_opts){.hold_ms = 100000, .wait_ms = 100000}, why,
                             sizeof why);
  assert_non_null(r);
  size_t i, longs = 0;
  const json_t *f;
  json_array_foreach(json_object_get(r, "findings"), i, f) {
    const char *k = json_string_value(json_object_get(f, "kind"));
    longs += !strcmp(k, "long_hold") || !strcmp(k, "long_wait") || !strcmp(k, "long_dlock_hold");
  }
  assert_int_equal(longs, 0);
  json_decref(r);
  free(dir);
}

static void test_report_model(void **state) {
  (void)state;
  char *dir = fixture("incident");
  json_t *r = analyse("incident");
  json_t *m = rv_unravel_report_model(dir, r);
  const json_t *reps = json_object_get(m, "replicas");
  assert_int_equal(json_array_size(reps), 3);
  const json_t *r1 = json_array_get(reps, 0);
  assert_string_equal(json_string_value(json_object_get(r1, "name")), "billing/1");
  assert_int_equal(json_array_size(json_object_get(r1, "samples")), 2);
  assert_int_equal(json_array_size(json_object_get(json_array_get(reps, 1), "samples")), 0);
  const json_t *mk = json_array_get(json_object_get(m, "markers"), 0);
  assert_string_equal(json_string_value(json_object_get(mk, "label")),
                      "CFG.SET platform upstream.url rev 7");
  assert_int_equal(json_integer_value(json_object_get(mk, "t_ms")), 1795780101014LL);
  assert_false(json_is_true(json_object_get(json_object_get(m, "diagnosis"), "healthy")));
  assert_non_null(json_object_get(json_object_get(m, "graph"), "nodes"));
  json_decref(m);
  json_decref(r);
  free(dir);
}

static void test_not_a_collection(void **state) {
  (void)state;
  char why[256] = "";
  assert_null(rv_unravel_dir("/nonexistent/ravel", NULL, why, sizeof why));
  assert_true(why[0]);
  char tmp[] = "/tmp/ravel-unravel-test-XXXXXX";
  assert_non_null(mkdtemp(tmp));
  assert_null(rv_unravel_dir(tmp, NULL, why, sizeof why));
  rmdir(tmp);
}

/* ---- scale: 3 replicas x 3000 threads ------------------------------------------------------ */

static void write_file(const char *dir, const char *sub, const char *name, json_t *j) {
  char *d = NULL, *p = NULL;
  assert_true(asprintf(&d, "%s/%s", dir, sub) > 0);
  mkdir(d, 0755);
  assert_true(asprintf(&p, "%s/%s", d, name) > 0);
  assert_int_equal(json_dump_file(j, p, 0), 0);
  json_decref(j);
  free(d);
  free(p);
}

static void rmtree_simple(const char *dir) {
  char *cmd = NULL;
  assert_true(asprintf(&cmd, "rm -rf '%s'", dir) > 0);
  assert_int_equal(system(cmd), 0);
  free(cmd);
}

static void test_scale(void **state) {
  (void)state;
  enum { REPLICAS = 3, THREADS = 3000 };
  char tmp[] = "/tmp/ravel-unravel-scale-XXXXXX";
  assert_non_null(mkdtemp(tmp));
  json_t *procs = json_array(), *locks = json_array();
  for (int r = 1; r <= REPLICAS; r++) {
    int pid = 1000 + r;
    char dir[32], grp[32];
    snprintf(dir, sizeof dir, "billing-%d", r);
    snprintf(grp, sizeof grp, "billing/%d", r);
    json_array_append_new(procs, json_pack("{s:s, s:s, s:s, s:s, s:i, s:b}", "dir", dir, "kind",
                                           "service", "service", "billing", "replica",
                                           grp + 8, "pid", pid, "answered", 1));
    json_t *threads = json_array();
    /* Thread 2 holds the cache's read lock and dlock res-R, and asks for the cache again
     * behind the watcher (thread 3); the others wait for the other replicas' dlocks. */
    json_array_append_new(
        threads, json_pack("{s:i, s:s, s:s, s:[{s:s, s:i, s:s, s:s, s:s, s:I}], s:{s:s, s:s, s:i, "
                           "s:I, s:s}}",
                           "id", 2, "name", "handler-0", "task", "", "held", "lock", "client-cache",
                           "lock_id", 4, "kind", "rwlock", "mode", "read", "site", "svc.c:1",
                           "held_ns", (json_int_t)9000000000, "wait", "kind", "rwlock.rdlock",
                           "what", "client-cache", "obj_id", 4, "waiting_ns",
                           (json_int_t)8000000000, "site", "svc.c:2"));
    json_array_append_new(threads,
                          json_pack("{s:i, s:s, s:s, s:[], s:{s:s, s:s, s:i, s:I, s:s}}", "id", 3,
                                    "name", "watcher", "task", "", "held", "wait", "kind",
                                    "rwlock.wrlock", "what", "client-cache", "obj_id", 4,
                                    "waiting_ns", (json_int_t)8500000000, "site", "w.c:1"));
    for (int t = 10; t < 10 + THREADS; t++) {
      char what[32];
      snprintf(what, sizeof what, "dlock res-%d", 1 + (t % REPLICAS));
      json_array_append_new(threads,
                            json_pack("{s:i, s:s, s:s, s:[], s:{s:s, s:s, s:i, s:I, s:s}}", "id",
                                      t, "name", "handler", "task", "", "held", "wait", "kind",
                                      "external", "what", what, "obj_id", 0, "waiting_ns",
                                      (json_int_t)7000000000, "site", "cc.c:1"));
    }
    write_file(tmp, dir, "threads.json",
               json_pack("{s:i, s:o, s:{s:i, s:[]}}", "pid", pid, "threads", threads,
                         "recursive_reads", "total", 0, "reports"));
    char name[32], desc[64];
    snprintf(name, sizeof name, "res-%d", r);
    snprintf(desc, sizeof desc, "pid %d thread 2 handler-0: x", pid);
    json_array_append_new(locks, json_pack("{s:s, s:i, s:i, s:s, s:i, s:i, s:i, s:[]}", "lock", name,
                                           "held", 1, "token", r, "description", desc, "held_ms",
                                           9000, "waiter_count", THREADS, "pid", pid, "waiters"));
  }
  write_file(tmp, ".", "manifest.json",
             json_pack("{s:s, s:o}", "format", "ravel-grab/1", "processes", procs));
  write_file(tmp, "coord", "lock-table.json", locks);
  /* Speed is measured by bench/unravel_bench.sh; here only the figure is printed. */
  int64_t a = rv_now_ns();
  char why[256];
  json_t *r = rv_unravel_dir(tmp, NULL, why, sizeof why);
  int64_t b = rv_now_ns();
  assert_non_null(r);
  print_message("unravel: %d threads in %.3f s\n", REPLICAS * (THREADS + 2), (double)(b - a) / 1e9);
  assert_int_equal(json_array_size(json_object_get(r, "cycles")), REPLICAS);
  size_t blocked = 0, i;
  const json_t *c;
  json_array_foreach(json_object_get(r, "cycles"), i, c)
    blocked += (size_t)json_integer_value(json_object_get(c, "blocked_behind"));
  assert_int_equal(blocked, REPLICAS * THREADS);
  json_decref(r);
  rmtree_simple(tmp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_incident),     cmocka_unit_test(test_cross_process),
      cmocka_unit_test(test_skewed_capture),
      cmocka_unit_test(test_confirmed_by_second_capture),
      cmocka_unit_test(test_healthy),      cmocka_unit_test(test_thresholds),
      cmocka_unit_test(test_report_model), cmocka_unit_test(test_not_a_collection),
      cmocka_unit_test(test_scale),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
