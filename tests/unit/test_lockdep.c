/*
 * Lock-order checking: an ABBA pair of tracked locks is reported the first
 * time the second order is attempted, even when the two orders never overlap
 * in time; transitive cycles too; each inverted pair once; the policy; the
 * dumps; the bounds of the order graph.
 *
 * Every test uses its own lock names: the order graph is per registry (per
 * process here) and outlives the locks.  The bounds test fills the graph, so
 * it runs last.
 */
#include "support.h"

#include "obs/admin.h"
#include "obs/dump.h"
#include "obs/metrics.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct captured {
  int n;
  char last[4096];
} captured;

static void capture_log(void *arg, const char *level, const char *msg) {
  captured *c = arg;
  c->n++;
  snprintf(c->last, sizeof c->last, "%s %s", level, msg);
}

static rv_lockorder_report last_report(void) {
  rv_snapshot *s = rv_snapshot_take(rv_registry_current());
  assert_non_null(s);
  assert_true(s->nlockorder >= 1);
  rv_lockorder_report r = s->lockorder[s->nlockorder - 1];
  rv_snapshot_free(s);
  return r;
}

static void assert_site(const char *file, int line, int want_line) {
  assert_non_null(file);
  assert_non_null(strstr(file, "test_lockdep.c"));
  assert_int_equal(line, want_line);
}

/* ---- ABBA across two threads that never overlap ------------------------------------ */

typedef struct abba {
  rv_mutex accounts, ledger;
  int a1_line, l1_line; /* worker-a: accounts then ledger */
  int l2_line, a2_line; /* worker-b: ledger then accounts */
  uint64_t count_before, count_after_ledger, count_after_accounts;
} abba;

static void worker_a(void *arg) {
  abba *s = arg;
  rv_mutex_lock(&s->accounts);
  s->a1_line = __LINE__ - 1;
  rv_mutex_lock(&s->ledger);
  s->l1_line = __LINE__ - 1;
  rv_mutex_unlock(&s->ledger);
  rv_mutex_unlock(&s->accounts);
}

static void worker_b(void *arg) {
  abba *s = arg;
  rv_registry *reg = rv_registry_current();
  s->count_before = rv_registry_lockorder_count(reg);
  rv_mutex_lock(&s->ledger);
  s->l2_line = __LINE__ - 1;
  s->count_after_ledger = rv_registry_lockorder_count(reg);
  rv_mutex_lock(&s->accounts); /* nobody holds it: nothing blocks, still an inversion */
  s->a2_line = __LINE__ - 1;
  s->count_after_accounts = rv_registry_lockorder_count(reg);
  rv_mutex_unlock(&s->accounts);
  rv_mutex_unlock(&s->ledger);
}

static void test_abba_reported_without_overlap(void **state) {
  rv_registry *reg = rv_registry_current();
  captured cap = {0};
  rv_registry_set_log(reg, capture_log, &cap);
  abba s = {0};
  rv_mutex_init(&s.accounts, "accounts");
  rv_mutex_init(&s.ledger, "ledger");

  rv_thread *ta, *tb;
  assert_int_equal(rv_thread_start(&ta, "worker-a", "test", worker_a, &s), RV_OK);
  rv_thread_join(ta);
  assert_int_equal(cap.n, 0);
  assert_int_equal(rv_thread_start(&tb, "worker-b", "test", worker_b, &s), RV_OK);
  rv_thread_join(tb);

  /* Reported on worker-b's acquisition of accounts, not before. */
  assert_int_equal(s.count_after_ledger, s.count_before);
  assert_int_equal(s.count_after_accounts, s.count_before + 1);
  assert_int_equal(cap.n, 1);
  assert_non_null(strstr(cap.last, "warn"));
  assert_non_null(strstr(cap.last, "lock order inversion"));
  char site[64];
  int lines[4] = {s.a1_line, s.l1_line, s.l2_line, s.a2_line};
  for (int i = 0; i < 4; i++) {
    snprintf(site, sizeof site, "test_lockdep.c:%d", lines[i]);
    assert_non_null(strstr(cap.last, site));
  }
  assert_non_null(strstr(cap.last, "worker-a"));
  assert_non_null(strstr(cap.last, "worker-b"));

  rv_lockorder_report r = last_report();
  assert_string_equal(r.now.thread_name, "worker-b");
  assert_string_equal(r.now.held_lock, "ledger");
  assert_site(r.now.held_file, r.now.held_line, s.l2_line);
  assert_string_equal(r.now.acquiring_lock, "accounts");
  assert_site(r.now.acquiring_file, r.now.acquiring_line, s.a2_line);
  assert_int_equal(r.nprior, 1);
  assert_int_equal(r.prior_more, 0);
  assert_string_equal(r.prior[0].thread_name, "worker-a");
  assert_string_equal(r.prior[0].held_lock, "accounts");
  assert_site(r.prior[0].held_file, r.prior[0].held_line, s.a1_line);
  assert_string_equal(r.prior[0].acquiring_lock, "ledger");
  assert_site(r.prior[0].acquiring_file, r.prior[0].acquiring_line, s.l1_line);
  assert_true(r.now.thread_id != r.prior[0].thread_id);

  char text[2048];
  rv_lockorder_report_text(&r, text, sizeof text);
  assert_non_null(strstr(text, "\"worker-b\" acquired \"accounts\""));
  assert_non_null(strstr(text, "while holding \"ledger\""));
  assert_non_null(strstr(text, "earlier thread"));
  assert_non_null(strstr(text, "\"worker-a\" acquired \"ledger\""));
  assert_non_null(strstr(text, "these two orders can deadlock"));

  /* The text dump. */
  char *dump = rv_dump(reg, RV_DUMP_THREADS, RV_DUMP_TEXT);
  assert_non_null(dump);
  assert_non_null(strstr(dump, "LOCK ORDER: "));
  assert_non_null(strstr(dump, text));
  free(dump);

  /* The JSON dump, with the keys `ravel unravel` reads. */
  dump = rv_dump(reg, RV_DUMP_THREADS, RV_DUMP_JSON);
  assert_non_null(dump);
  json_error_t err;
  json_t *root = json_loads(dump, 0, &err);
  free(dump);
  assert_non_null(root);
  assert_true(json_integer_value(json_object_get(root, "lock_order_total")) >= 1);
  json_t *reps = json_object_get(root, "lock_order_reports");
  assert_true(json_is_array(reps) && json_array_size(reps) >= 1);
  json_t *j = json_array_get(reps, json_array_size(reps) - 1);
  assert_string_equal(json_string_value(json_object_get(j, "text")), text);
  assert_int_equal(json_integer_value(json_object_get(j, "thread_id")), r.now.thread_id);
  assert_string_equal(json_string_value(json_object_get(j, "thread_name")), "worker-b");
  assert_string_equal(json_string_value(json_object_get(j, "held_lock")), "ledger");
  assert_string_equal(json_string_value(json_object_get(j, "acquiring_lock")), "accounts");
  assert_string_equal(json_string_value(json_object_get(j, "prior_thread_name")), "worker-a");
  assert_string_equal(json_string_value(json_object_get(j, "prior_held_lock")), "accounts");
  assert_string_equal(json_string_value(json_object_get(j, "prior_acquiring_lock")), "ledger");
  const char *site_keys[] = {"held_site", "acquiring_site", "prior_held_site",
                             "prior_acquiring_site"};
  int site_lines[] = {s.l2_line, s.a2_line, s.a1_line, s.l1_line};
  for (int i = 0; i < 4; i++) {
    snprintf(site, sizeof site, "test_lockdep.c:%d", site_lines[i]);
    const char *v = json_string_value(json_object_get(j, site_keys[i]));
    assert_non_null(v);
    assert_non_null(strstr(v, site));
  }
  assert_true(json_integer_value(json_object_get(j, "at_wall_ms")) > 0);
  json_decref(root);

  /* The counter. */
  rv_metrics *m = rv_metrics_new();
  assert_non_null(m);
  assert_int_equal(rv_metrics_add_collector(m, rv_registry_collect, reg), 0);
  char *text_metrics = NULL;
  size_t len = 0;
  assert_int_equal(rv_metrics_render(m, &text_metrics, &len), 0);
  char want[96];
  snprintf(want, sizeof want, "\nravel_lock_order_reports_total %llu\n",
           (unsigned long long)rv_registry_lockorder_count(reg));
  assert_non_null(strstr(text_metrics, want));
  free(text_metrics);
  rv_metrics_free(m);

  rv_registry_set_log(reg, NULL, NULL);
  rv_mutex_destroy(&s.accounts);
  rv_mutex_destroy(&s.ledger);
}

/* ---- same order, transitive cycles, once only --------------------------------------- */

static void lock2(rv_mutex *outer, rv_mutex *inner) {
  rv_mutex_lock(outer);
  rv_mutex_lock(inner);
  rv_mutex_unlock(inner);
  rv_mutex_unlock(outer);
}

static void test_same_order_silent_transitive_reported_once(void **state) {
  rv_registry *reg = rv_registry_current();
  captured cap = {0};
  rv_registry_set_log(reg, capture_log, &cap);
  uint64_t before = rv_registry_lockorder_count(reg);
  rv_mutex a, b, c;
  rv_mutex_init(&a, "t2-a");
  rv_mutex_init(&b, "t2-b");
  rv_mutex_init(&c, "t2-c");

  lock2(&a, &b);
  lock2(&a, &b);
  assert_int_equal(rv_registry_lockorder_count(reg), before);
  lock2(&b, &c);
  assert_int_equal(rv_registry_lockorder_count(reg), before);
  lock2(&c, &a); /* a -> b -> c already: c -> a closes the cycle */
  assert_int_equal(rv_registry_lockorder_count(reg), before + 1);
  assert_int_equal(cap.n, 1);

  rv_lockorder_report r = last_report();
  assert_string_equal(r.now.held_lock, "t2-c");
  assert_string_equal(r.now.acquiring_lock, "t2-a");
  assert_int_equal(r.nprior, 2);
  assert_string_equal(r.prior[0].held_lock, "t2-a");
  assert_string_equal(r.prior[0].acquiring_lock, "t2-b");
  assert_string_equal(r.prior[1].held_lock, "t2-b");
  assert_string_equal(r.prior[1].acquiring_lock, "t2-c");
  char text[2048];
  rv_lockorder_report_text(&r, text, sizeof text);
  assert_non_null(strstr(text, "these orders can deadlock"));

  /* Repeating any of the orders, the inverted one included, says nothing more. */
  for (int i = 0; i < 3; i++) {
    lock2(&c, &a);
    lock2(&a, &b);
    lock2(&b, &c);
  }
  assert_int_equal(rv_registry_lockorder_count(reg), before + 1);
  assert_int_equal(cap.n, 1);

  /* Two locks of one class (one name) make no order with each other. */
  rv_mutex s1, s2;
  rv_mutex_init(&s1, "t2-same");
  rv_mutex_init(&s2, "t2-same");
  lock2(&s1, &s2);
  lock2(&s2, &s1);
  assert_int_equal(rv_registry_lockorder_count(reg), before + 1);

  /* Trylock cannot block: it adds no order (but what it holds orders what follows). */
  rv_mutex t1, t2;
  rv_mutex_init(&t1, "t2-try1");
  rv_mutex_init(&t2, "t2-try2");
  lock2(&t1, &t2);
  rv_mutex_lock(&t2);
  assert_int_equal(rv_mutex_trylock(&t1), RV_OK);
  rv_mutex_unlock(&t1);
  rv_mutex_unlock(&t2);
  assert_int_equal(rv_registry_lockorder_count(reg), before + 1);

  rv_registry_set_log(reg, NULL, NULL);
  rv_mutex_destroy(&a);
  rv_mutex_destroy(&b);
  rv_mutex_destroy(&c);
  rv_mutex_destroy(&s1);
  rv_mutex_destroy(&s2);
  rv_mutex_destroy(&t1);
  rv_mutex_destroy(&t2);
}

/* Read locks order like write locks: with writer-preferring rwlocks, two readers can deadlock. */
static void test_read_locks_ordered(void **state) {
  rv_registry *reg = rv_registry_current();
  captured cap = {0};
  rv_registry_set_log(reg, capture_log, &cap);
  uint64_t before = rv_registry_lockorder_count(reg);
  rv_rwlock x, y;
  rv_rwlock_init(&x, "t3-x");
  rv_rwlock_init(&y, "t3-y");
  rv_rwlock_rdlock(&x);
  rv_rwlock_rdlock(&y);
  rv_rwlock_rdunlock(&y);
  rv_rwlock_rdunlock(&x);
  rv_rwlock_rdlock(&y);
  rv_rwlock_wrlock(&x);
  rv_rwlock_wrunlock(&x);
  rv_rwlock_rdunlock(&y);
  assert_int_equal(rv_registry_lockorder_count(reg), before + 1);
  assert_int_equal(cap.n, 1);
  rv_registry_set_log(reg, NULL, NULL);
  rv_rwlock_destroy(&x);
  rv_rwlock_destroy(&y);
}

/* ---- policy ---------------------------------------------------------------------------- */

static void test_policy_off_and_parse(void **state) {
  rv_registry *reg = rv_registry_current();
  assert_int_equal(rv_lockorder_policy_parse("off"), RV_LOCKORDER_OFF);
  assert_int_equal(rv_lockorder_policy_parse("warn"), RV_LOCKORDER_WARN);
  assert_int_equal(rv_lockorder_policy_parse("abort"), RV_LOCKORDER_ABORT);
  assert_int_equal(rv_lockorder_policy_parse("loud"), -1);
  assert_int_equal(rv_lockorder_policy_parse(NULL), -1);
  assert_int_equal(rv_registry_lockorder_policy(reg), RV_LOCKORDER_WARN);

  captured cap = {0};
  rv_registry_set_log(reg, capture_log, &cap);
  uint64_t before = rv_registry_lockorder_count(reg);
  rv_registry_set_lockorder_policy(reg, RV_LOCKORDER_OFF);
  assert_int_equal(rv_registry_lockorder_policy(reg), RV_LOCKORDER_OFF);
  rv_mutex p, q;
  rv_mutex_init(&p, "t4-p");
  rv_mutex_init(&q, "t4-q");
  lock2(&p, &q);
  lock2(&q, &p);
  assert_int_equal(rv_registry_lockorder_count(reg), before);
  assert_int_equal(cap.n, 0);
  rv_registry_set_lockorder_policy(reg, RV_LOCKORDER_WARN);
  rv_registry_set_log(reg, NULL, NULL);
  rv_mutex_destroy(&p);
  rv_mutex_destroy(&q);
}

static int abort_log_fd = -1;

static void pipe_log(void *arg, const char *level, const char *msg) {
  char line[4200];
  int n = snprintf(line, sizeof line, "%s %s\n", level, msg);
  if (n > 0 && write(abort_log_fd, line, (size_t)n) < 0)
    _exit(3);
}

/* Abort policy: in a forked child, which must die of SIGABRT after logging the inversion. */
static void test_policy_abort(void **state) {
  int fds[2];
  assert_int_equal(pipe(fds), 0);
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    abort_log_fd = fds[1];
    rv_registry *reg = rv_registry_current();
    rv_registry_set_log(reg, pipe_log, NULL);
    rv_registry_set_lockorder_policy(reg, RV_LOCKORDER_ABORT);
    rv_mutex p, q;
    rv_mutex_init(&p, "t5-p");
    rv_mutex_init(&q, "t5-q");
    lock2(&p, &q);
    lock2(&q, &p); /* aborts */
    _exit(0);
  }
  close(fds[1]);
  char buf[8192];
  size_t len = 0;
  ssize_t n;
  while (len + 1 < sizeof buf && (n = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0)
    len += (size_t)n;
  buf[len] = 0;
  close(fds[0]);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  assert_int_equal(WTERMSIG(status), SIGABRT);
  assert_non_null(strstr(buf, "error "));
  assert_non_null(strstr(buf, "lock order inversion"));
  assert_non_null(strstr(buf, "t5-p"));
}

/* ---- many threads, one order, dumps meanwhile (for TSan) ---------------------------------- */

#define CONC_THREADS 4
#define CONC_ITERS 5000

typedef struct conc {
  rv_mutex outer[2];
  rv_rwlock inner;
} conc;

static void conc_worker(void *arg) {
  conc *c = arg;
  for (int i = 0; i < CONC_ITERS; i++) {
    rv_mutex *o = &c->outer[i % 2];
    rv_mutex_lock(o);
    if (i % 3)
      rv_rwlock_rdlock(&c->inner);
    else
      rv_rwlock_wrlock(&c->inner);
    if (i % 3)
      rv_rwlock_rdunlock(&c->inner);
    else
      rv_rwlock_wrunlock(&c->inner);
    rv_mutex_unlock(o);
  }
}

static void test_concurrent_consistent_order(void **state) {
  rv_registry *reg = rv_registry_current();
  uint64_t before = rv_registry_lockorder_count(reg);
  conc c;
  rv_mutex_init(&c.outer[0], "t7-outer-0");
  rv_mutex_init(&c.outer[1], "t7-outer-1");
  rv_rwlock_init(&c.inner, "t7-inner");
  rv_thread *t[CONC_THREADS];
  for (int i = 0; i < CONC_THREADS; i++)
    assert_int_equal(rv_thread_start(&t[i], "conc", "test", conc_worker, &c), RV_OK);
  for (int i = 0; i < 20; i++) {
    char *d = rv_dump(reg, RV_DUMP_THREADS, i % 2 ? RV_DUMP_JSON : RV_DUMP_TEXT);
    assert_non_null(d);
    free(d);
  }
  for (int i = 0; i < CONC_THREADS; i++)
    rv_thread_join(t[i]);
  assert_int_equal(rv_registry_lockorder_count(reg), before);
  rv_mutex_destroy(&c.outer[0]);
  rv_mutex_destroy(&c.outer[1]);
  rv_rwlock_destroy(&c.inner);
}

/* ---- bounds (fills the graph: keep last) ------------------------------------------------ */

static void test_bounds(void **state) {
  rv_registry *reg = rv_registry_current();
  captured cap = {0};
  rv_registry_set_log(reg, capture_log, &cap);
  uint64_t before = rv_registry_lockorder_count(reg);
  rv_lockorder_stats st;
  rv_registry_lockorder_stats(reg, &st);
  assert_true(st.classes < 100);

  /* Acyclic pairs i -> j (i < j) among 100 names: 4950 pairs, more than the edge bound. */
  enum { N = 100 };
  static rv_mutex m[N];
  char name[32];
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "t6-%d", i);
    rv_mutex_init(&m[i], name);
  }
  for (int i = 0; i < N; i++)
    for (int j = i + 1; j < N; j++)
      lock2(&m[i], &m[j]);
  rv_registry_lockorder_stats(reg, &st);
  assert_int_equal(st.edges, RV_LOCKORDER_EDGES_MAX);
  assert_true(st.edges_overflow > 0);
  assert_int_equal(st.reports_total, before);

  /* More names than the class bound. */
  rv_mutex outer;
  rv_mutex_init(&outer, "t6-outer");
  for (int i = 0; i < RV_LOCKORDER_CLASSES_MAX + 10; i++) {
    rv_mutex inner;
    snprintf(name, sizeof name, "t6-class-%d", i);
    rv_mutex_init(&inner, name);
    lock2(&outer, &inner);
    rv_mutex_destroy(&inner);
  }
  rv_registry_lockorder_stats(reg, &st);
  assert_int_equal(st.classes, RV_LOCKORDER_CLASSES_MAX);
  assert_true(st.classes_overflow > 0);
  assert_int_equal(st.reports_total, before);
  assert_int_equal(cap.n, 0);

  /* The dumps say so. */
  char *dump = rv_dump(reg, RV_DUMP_THREADS, RV_DUMP_TEXT);
  assert_non_null(dump);
  assert_non_null(strstr(dump, "order graph full"));
  free(dump);
  dump = rv_dump(reg, RV_DUMP_THREADS, RV_DUMP_JSON);
  assert_non_null(dump);
  assert_non_null(strstr(dump, "\"classes_overflow\""));
  free(dump);

  rv_registry_set_log(reg, NULL, NULL);
  rv_mutex_destroy(&outer);
  for (int i = 0; i < N; i++)
    rv_mutex_destroy(&m[i]);
}

int main(void) {
  rv_thread_adopt("main", "test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_abba_reported_without_overlap),
      cmocka_unit_test(test_same_order_silent_transitive_reported_once),
      cmocka_unit_test(test_read_locks_ordered),
      cmocka_unit_test(test_policy_off_and_parse),
      cmocka_unit_test(test_policy_abort),
      cmocka_unit_test(test_concurrent_consistent_order),
      cmocka_unit_test(test_bounds), /* fills the order graph: last */
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
