/*
 * Tracked locks: mutual exclusion, Go's writer-preferring rwlock semantics,
 * recursive read detection, the deadlock it leads to, and the wait-for graph
 * naming the cycle.
 */
#include "support.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

/* ---- mutual exclusion under contention ---------------------------------------- */

#define COUNT_THREADS 4
#define COUNT_ITERS 20000

typedef struct counter {
  rv_mutex mu;
  long value;
} counter;

static void count_worker(void *arg) {
  counter *c = arg;
  for (int i = 0; i < COUNT_ITERS; i++) {
    rv_mutex_lock(&c->mu);
    c->value++;
    rv_mutex_unlock(&c->mu);
  }
}

static void test_mutex_excludes(void **state) {
  counter c = {0};
  rv_mutex_init(&c.mu, "counter");
  rv_thread *t[COUNT_THREADS];
  for (int i = 0; i < COUNT_THREADS; i++)
    assert_int_equal(rv_thread_start(&t[i], "counter", "test", count_worker, &c), RV_OK);
  for (int i = 0; i < COUNT_THREADS; i++)
    rv_thread_join(t[i]);
  assert_int_equal(c.value, (long)COUNT_THREADS * COUNT_ITERS);
  assert_int_equal(rv_mutex_trylock(&c.mu), RV_OK);
  assert_int_equal(rv_mutex_trylock(&c.mu), RV_EBUSY);
  rv_mutex_unlock(&c.mu);
  rv_mutex_destroy(&c.mu);
}

/* ---- rwlock: writer preference, Go style ------------------------------------------ */

typedef struct rwtest {
  rv_rwlock rw;
  rv_mutex log_mu;
  char log[64];
  rv_ctx *ctx; /* for threads that should be cancellable */
  int rc;
} rwtest;

static void log_event(rwtest *s, char c) {
  rv_mutex_lock(&s->log_mu);
  size_t n = strlen(s->log);
  if (n + 1 < sizeof s->log)
    s->log[n] = c;
  rv_mutex_unlock(&s->log_mu);
}

static void writer_thread(void *arg) {
  rwtest *s = arg;
  s->rc = rv_rwlock_wrlock_ctx(&s->rw, s->ctx);
  if (s->rc == RV_OK) {
    log_event(s, 'W');
    rv_rwlock_wrunlock(&s->rw);
  }
}

static void reader_thread(void *arg) {
  rwtest *s = arg;
  rv_rwlock_rdlock(&s->rw);
  log_event(s, 'R');
  rv_rwlock_rdunlock(&s->rw);
}

static void test_rwlock_writer_preferring(void **state) {
  rwtest s = {0};
  rv_rwlock_init(&s.rw, "prefs");
  rv_mutex_init(&s.log_mu, "log");

  rv_rwlock_rdlock(&s.rw); /* main holds a read lock */
  rv_thread *w, *r;
  assert_int_equal(rv_thread_start(&w, "writer", "test", writer_thread, &s), RV_OK);
  assert_true(rvt_await_wait(w, RV_WAIT_WRLOCK));
  /* A writer waits: a new reader must queue although only readers hold the lock. */
  assert_int_equal(rv_thread_start(&r, "reader", "test", reader_thread, &s), RV_OK);
  assert_true(rvt_await_wait(r, RV_WAIT_RDLOCK));
  rv_rwlock_rdunlock(&s.rw);
  rv_thread_join(w);
  rv_thread_join(r);
  assert_string_equal(s.log, "WR");
  rv_rwlock_destroy(&s.rw);
  rv_mutex_destroy(&s.log_mu);
}

static void test_rwlock_readers_go_before_next_writer(void **state) {
  rwtest s = {0};
  rv_rwlock_init(&s.rw, "handover");
  rv_mutex_init(&s.log_mu, "log");

  rv_rwlock_wrlock(&s.rw); /* main writes */
  rv_thread *r1, *r2, *w;
  assert_int_equal(rv_thread_start(&r1, "reader-1", "test", reader_thread, &s), RV_OK);
  assert_true(rvt_await_wait(r1, RV_WAIT_RDLOCK));
  assert_int_equal(rv_thread_start(&w, "writer", "test", writer_thread, &s), RV_OK);
  assert_true(rvt_await_wait(w, RV_WAIT_WRLOCK));
  assert_int_equal(rv_thread_start(&r2, "reader-2", "test", reader_thread, &s), RV_OK);
  assert_true(rvt_await_wait(r2, RV_WAIT_RDLOCK));
  /* On unlock, every reader that queued behind this writer goes first. */
  rv_rwlock_wrunlock(&s.rw);
  rv_thread_join(r1);
  rv_thread_join(r2);
  rv_thread_join(w);
  assert_string_equal(s.log, "RRW");
  rv_rwlock_destroy(&s.rw);
  rv_mutex_destroy(&s.log_mu);
}

static void test_rwlock_cancelled_writer_lets_readers_in(void **state) {
  rwtest s = {0};
  rv_rwlock_init(&s.rw, "withdraw");
  rv_mutex_init(&s.log_mu, "log");
  s.ctx = rv_ctx_new(NULL);

  rv_rwlock_rdlock(&s.rw);
  rv_thread *w, *r;
  assert_int_equal(rv_thread_start(&w, "writer", "test", writer_thread, &s), RV_OK);
  assert_true(rvt_await_wait(w, RV_WAIT_WRLOCK));
  assert_int_equal(rv_thread_start(&r, "reader", "test", reader_thread, &s), RV_OK);
  assert_true(rvt_await_wait(r, RV_WAIT_RDLOCK));
  /* The writer gives up: the reader it was blocking must get in at once. */
  rv_ctx_cancel(s.ctx, "writer gives up");
  rv_thread_join(w);
  assert_int_equal(s.rc, RV_ECANCELED);
  rv_thread_join(r);
  assert_string_equal(s.log, "R");
  rv_rwlock_rdunlock(&s.rw);
  rv_ctx_free(s.ctx);
  rv_rwlock_destroy(&s.rw);
  rv_mutex_destroy(&s.log_mu);
}

/* ---- recursive read detection ------------------------------------------------------- */

typedef struct captured {
  int n;
  char last[512];
} captured;

static void capture_log(void *arg, const char *level, const char *msg) {
  captured *c = arg;
  c->n++;
  snprintf(c->last, sizeof c->last, "%s %s", level, msg);
}

static void test_recursive_read_reported_without_writer(void **state) {
  rv_registry *reg = rv_registry_current();
  captured cap = {0};
  rv_registry_set_log(reg, capture_log, &cap);
  uint64_t before = rv_registry_recursive_count(reg);

  rv_rwlock rw;
  rv_rwlock_init(&rw, "client-cache");
  rv_rwlock_rdlock(&rw);
  int first_line = __LINE__ - 1;
  rv_rwlock_rdlock(&rw); /* no writer anywhere: must still be reported, now */
  int second_line = __LINE__ - 1;
  assert_int_equal(rv_registry_recursive_count(reg), before + 1);
  assert_int_equal(cap.n, 1);
  char site1[64], site2[64];
  snprintf(site1, sizeof site1, "test_sync.c:%d", first_line);
  snprintf(site2, sizeof site2, "test_sync.c:%d", second_line);
  assert_non_null(strstr(cap.last, "warn"));
  assert_non_null(strstr(cap.last, "client-cache"));
  assert_non_null(strstr(cap.last, site1));
  assert_non_null(strstr(cap.last, site2));

  rv_snapshot *s = rv_snapshot_take(reg);
  assert_true(s->nreports >= 1);
  rv_recursive_report *rep = &s->reports[s->nreports - 1];
  assert_string_equal(rep->lock_name, "client-cache");
  assert_int_equal(rep->first_line, first_line);
  assert_int_equal(rep->second_line, second_line);
  rv_snapshot_free(s);

  rv_rwlock_rdunlock(&rw);
  rv_rwlock_rdunlock(&rw);

  /* Policy off: silent. */
  rv_registry_set_recursive_policy(reg, RV_RECURSIVE_OFF);
  rv_rwlock_rdlock(&rw);
  rv_rwlock_rdlock(&rw);
  rv_rwlock_rdunlock(&rw);
  rv_rwlock_rdunlock(&rw);
  assert_int_equal(cap.n, 1);
  rv_registry_set_recursive_policy(reg, RV_RECURSIVE_WARN);
  rv_registry_set_log(reg, NULL, NULL);
  rv_rwlock_destroy(&rw);
}

/*
 * The incident in miniature: a handler read-locks the cache, a config
 * watcher queues for the write lock, the handler read-locks again.  The
 * handler waits for the writer, the writer for the handler: the wait-for
 * graph must name both and the lock.  Cancelling the handler's context is
 * what ends it (and proves the second read lock honours its context).
 */
typedef struct incident {
  rv_rwlock cache;
  rv_ctx *handler_ctx;
  rv_mutex mu;
  rv_cond cv;
  bool go_second;
  int second_rc;
} incident;

static void handler_thread(void *arg) {
  incident *s = arg;
  rv_thread_set_task("msg 0a1b resource=acct-42");
  rv_rwlock_rdlock(&s->cache);
  rv_mutex_lock(&s->mu);
  while (!s->go_second)
    rv_cond_wait(&s->cv, &s->mu, NULL);
  rv_mutex_unlock(&s->mu);
  s->second_rc = rv_rwlock_rdlock_ctx(&s->cache, s->handler_ctx);
  if (s->second_rc == RV_OK)
    rv_rwlock_rdunlock(&s->cache);
  rv_rwlock_rdunlock(&s->cache);
}

static void watcher_thread(void *arg) {
  incident *s = arg;
  rv_rwlock_wrlock(&s->cache);
  rv_rwlock_wrunlock(&s->cache);
}

static void test_recursive_read_deadlocks_with_writer(void **state) {
  rv_registry *reg = rv_registry_current();
  captured cap = {0};
  rv_registry_set_log(reg, capture_log, &cap);
  incident s = {0};
  rv_rwlock_init(&s.cache, "client-cache");
  rv_mutex_init(&s.mu, "incident");
  rv_cond_init(&s.cv, "incident");
  /* A safety bound only: the test cancels long before. */
  s.handler_ctx = rv_ctx_with_timeout(NULL, RVT_BOUND_NS);

  rv_thread *h, *w;
  assert_int_equal(rv_thread_start(&h, "handler-1", "handler", handler_thread, &s), RV_OK);
  assert_true(rvt_await_wait(h, RV_WAIT_COND)); /* holds the read lock, parked */
  assert_int_equal(rv_thread_start(&w, "config-watcher", "watcher", watcher_thread, &s), RV_OK);
  assert_true(rvt_await_wait(w, RV_WAIT_WRLOCK));
  rv_mutex_lock(&s.mu);
  s.go_second = true;
  rv_cond_signal(&s.cv);
  rv_mutex_unlock(&s.mu);
  assert_true(rvt_await_wait(h, RV_WAIT_RDLOCK)); /* stuck behind the writer */

  rv_snapshot *snap = rv_snapshot_take(reg);
  rv_deadlocks *d = rv_deadlocks_find(snap);
  assert_non_null(d);
  assert_int_equal(d->n, 1);
  assert_int_equal(d->items[0].nsteps, 2);
  bool saw_handler = false, saw_watcher = false;
  for (size_t k = 0; k < 2; k++) {
    const rv_thread_snap *t = &snap->threads[d->items[0].steps[k].thread];
    assert_string_equal(t->wait.what, "client-cache");
    saw_handler |= strcmp(t->name, "handler-1") == 0;
    saw_watcher |= strcmp(t->name, "config-watcher") == 0;
    if (strcmp(t->name, "config-watcher") == 0) {
      /* The watcher is blocked by the handler's first read hold. */
      const rv_hold *why = d->items[0].steps[k].hold;
      assert_non_null(why);
      assert_int_equal(why->mode, RV_MODE_READ);
      assert_string_equal(why->lock_name, "client-cache");
    }
  }
  assert_true(saw_handler && saw_watcher);
  rv_deadlocks_free(d);
  rv_snapshot_free(snap);
  assert_int_equal(cap.n, 1); /* reported at the second read lock */

  rv_ctx_cancel(s.handler_ctx, "message timed out");
  rv_thread_join(h);
  rv_thread_join(w);
  assert_int_equal(s.second_rc, RV_ECANCELED);
  rv_registry_set_log(reg, NULL, NULL);
  rv_ctx_free(s.handler_ctx);
  rv_rwlock_destroy(&s.cache);
  rv_cond_destroy(&s.cv);
  rv_mutex_destroy(&s.mu);
}

/* ---- ABBA on mutexes, and the threads piled up behind it --------------------------- */

typedef struct abba {
  rv_mutex a, b;
  rv_ctx *ctx;
  rv_mutex gate_mu;
  rv_cond gate;
  int holding;
} abba;

static void abba_side(abba *s, rv_mutex *first, rv_mutex *second) {
  rv_mutex_lock(first);
  rv_mutex_lock(&s->gate_mu);
  s->holding++;
  rv_cond_broadcast(&s->gate);
  while (s->holding < 2)
    rv_cond_wait(&s->gate, &s->gate_mu, NULL);
  rv_mutex_unlock(&s->gate_mu);
  if (rv_mutex_lock_ctx(second, s->ctx) == RV_OK)
    rv_mutex_unlock(second);
  rv_mutex_unlock(first);
}

static void ab_thread(void *arg) { abba_side(arg, &((abba *)arg)->a, &((abba *)arg)->b); }
static void ba_thread(void *arg) { abba_side(arg, &((abba *)arg)->b, &((abba *)arg)->a); }
static void a_thread(void *arg) {
  abba *s = arg;
  if (rv_mutex_lock_ctx(&s->a, s->ctx) == RV_OK)
    rv_mutex_unlock(&s->a);
}

static void test_abba_cycle_and_blocked(void **state) {
  abba s = {0};
  rv_mutex_init(&s.a, "lock-a");
  rv_mutex_init(&s.b, "lock-b");
  rv_mutex_init(&s.gate_mu, "gate");
  rv_cond_init(&s.gate, "gate");
  s.ctx = rv_ctx_new(NULL);
  rv_thread *t1, *t2, *t3;
  assert_int_equal(rv_thread_start(&t1, "ab", "test", ab_thread, &s), RV_OK);
  assert_int_equal(rv_thread_start(&t2, "ba", "test", ba_thread, &s), RV_OK);
  assert_true(rvt_await_wait(t1, RV_WAIT_MUTEX));
  assert_true(rvt_await_wait(t2, RV_WAIT_MUTEX));
  assert_int_equal(rv_thread_start(&t3, "bystander", "test", a_thread, &s), RV_OK);
  assert_true(rvt_await_wait(t3, RV_WAIT_MUTEX));

  rv_snapshot *snap = rv_snapshot_take(rv_registry_current());
  rv_deadlocks *d = rv_deadlocks_find(snap);
  assert_int_equal(d->n, 1);
  assert_int_equal(d->items[0].nsteps, 2);
  assert_int_equal(d->items[0].nblocked, 1); /* the bystander */
  rv_deadlocks_free(d);
  /* None of them changed while the snapshot was taken; a thread that had (marked
   * moving) is not blocked, so the same records with one moving make no cycle. */
  for (size_t i = 0; i < snap->nthreads; i++) {
    assert_false(snap->threads[i].moving);
    if (!strcmp(snap->threads[i].name, "ab"))
      snap->threads[i].moving = true;
  }
  d = rv_deadlocks_find(snap);
  assert_int_equal(d->n, 0);
  rv_deadlocks_free(d);
  rv_snapshot_free(snap);

  rv_ctx_cancel(s.ctx, "break the cycle");
  rv_thread_join(t1);
  rv_thread_join(t2);
  rv_thread_join(t3);
  rv_ctx_free(s.ctx);
  rv_mutex_destroy(&s.a);
  rv_mutex_destroy(&s.b);
  rv_mutex_destroy(&s.gate_mu);
  rv_cond_destroy(&s.gate);
}

/* ---- holds recorded with their sites ---------------------------------------------------- */

static void test_holds_recorded(void **state) {
  rv_mutex m;
  rv_mutex_init(&m, "recorded");
  rv_mutex_lock(&m);
  int line = __LINE__ - 1;
  rv_snapshot *s = rv_snapshot_take(rv_registry_current());
  uint64_t me = rv_thread_id(rv_thread_self());
  bool found = false;
  for (size_t i = 0; i < s->nthreads; i++) {
    if (s->threads[i].id != me)
      continue;
    for (int k = 0; k < s->threads[i].nheld; k++) {
      const rv_hold *h = &s->threads[i].held[k];
      if (strcmp(h->lock_name, "recorded") == 0) {
        found = true;
        assert_int_equal(h->line, line);
        assert_non_null(strstr(h->file, "test_sync.c"));
        assert_int_equal(h->kind, RV_LOCK_MUTEX);
      }
    }
  }
  assert_true(found);
  rv_snapshot_free(s);
  rv_mutex_unlock(&m);
  s = rv_snapshot_take(rv_registry_current());
  for (size_t i = 0; i < s->nthreads; i++)
    if (s->threads[i].id == me)
      assert_int_equal(s->threads[i].nheld, 0);
  rv_snapshot_free(s);
  rv_mutex_destroy(&m);
}

int main(void) {
  rv_thread_adopt("main", "test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_mutex_excludes),
      cmocka_unit_test(test_rwlock_writer_preferring),
      cmocka_unit_test(test_rwlock_readers_go_before_next_writer),
      cmocka_unit_test(test_rwlock_cancelled_writer_lets_readers_in),
      cmocka_unit_test(test_recursive_read_reported_without_writer),
      cmocka_unit_test(test_recursive_read_deadlocks_with_writer),
      cmocka_unit_test(test_abba_cycle_and_blocked),
      cmocka_unit_test(test_holds_recorded),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
