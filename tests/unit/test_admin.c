/*
 * The admin HTTP server answers while the application is deadlocked, and its
 * dump names the cycle.  Real server, real socket.
 */
#include "support.h"

#include "obs/admin.h"
#include "obs/dump.h"

#include <jansson.h>

/* The incident's deadlock: a handler read-locks twice around a queued writer. */
typedef struct world {
  rv_rwlock cache;
  rv_mutex mu;
  rv_cond cv;
  bool go_second;
  rv_ctx *ctx; /* lets the test unwind the deadlock at the end */
} world;

static void handler(void *arg) {
  world *w = arg;
  rv_thread_set_task("msg 0a1b2c3d4e5f6071 resource=acct-42");
  rv_rwlock_rdlock(&w->cache);
  rv_mutex_lock(&w->mu);
  while (!w->go_second)
    rv_cond_wait(&w->cv, &w->mu, NULL);
  rv_mutex_unlock(&w->mu);
  if (rv_rwlock_rdlock_ctx(&w->cache, w->ctx) == RV_OK)
    rv_rwlock_rdunlock(&w->cache);
  rv_rwlock_rdunlock(&w->cache);
}

static void watcher(void *arg) {
  world *w = arg;
  rv_rwlock_wrlock(&w->cache);
  rv_rwlock_wrunlock(&w->cache);
}

/* A bystander that piles up behind the writer, as the incident's other handlers did. */
static void bystander(void *arg) {
  world *w = arg;
  if (rv_rwlock_rdlock_ctx(&w->cache, w->ctx) == RV_OK)
    rv_rwlock_rdunlock(&w->cache);
}

static void echo(void *arg, const rv_admin_request *req, rv_admin_response *resp) {
  const char *who = rv_admin_query(req, "who");
  rv_admin_printf(resp, "%s %s %s [%s]", req->method, req->path, who ? who : "-", req->body);
}

static void test_admin_serves_dump_of_deadlocked_process(void **state) {
  rv_metrics *m = rv_metrics_new();
  rv_admin *a;
  assert_int_equal(rv_admin_start(&a, &(rv_admin_opts){.metrics = m}), RV_OK);
  uint16_t port = rv_admin_port(a);
  assert_true(port > 0);
  assert_int_equal(rv_admin_route(a, "POST", "/echo", echo, NULL), RV_OK);

  char *body;
  assert_int_equal(rvt_http(port, "GET", "/healthz", NULL, &body), 200);
  assert_string_equal(body, "ok\n");
  free(body);
  assert_int_equal(rvt_http(port, "GET", "/nope", NULL, &body), 404);
  free(body);
  assert_int_equal(rvt_http(port, "GET", "/echo", NULL, &body), 405);
  free(body);
  assert_int_equal(rvt_http(port, "POST", "/echo?who=me", "payload", &body), 200);
  assert_string_equal(body, "POST /echo me [payload]");
  free(body);

  world w = {0};
  rv_rwlock_init(&w.cache, "client-cache");
  rv_mutex_init(&w.mu, "world");
  rv_cond_init(&w.cv, "world");
  w.ctx = rv_ctx_new(NULL);
  rv_thread *h, *wt, *b;
  assert_int_equal(rv_thread_start(&h, "handler-7", "handler", handler, &w), RV_OK);
  assert_true(rvt_await_wait(h, RV_WAIT_COND));
  assert_int_equal(rv_thread_start(&wt, "config-watcher", "watcher", watcher, &w), RV_OK);
  assert_true(rvt_await_wait(wt, RV_WAIT_WRLOCK));
  assert_int_equal(rv_thread_start(&b, "handler-8", "handler", bystander, &w), RV_OK);
  assert_true(rvt_await_wait(b, RV_WAIT_RDLOCK));
  rv_mutex_lock(&w.mu);
  w.go_second = true;
  rv_cond_signal(&w.cv);
  rv_mutex_unlock(&w.mu);
  assert_true(rvt_await_wait(h, RV_WAIT_RDLOCK));

  /* The process is deadlocked; the admin server must still answer. */
  assert_int_equal(rvt_http(port, "GET", "/debug/threads", NULL, &body), 200);
  assert_non_null(strstr(body, "DEADLOCK 1: 2 threads in a cycle, 1 more blocked behind it"));
  assert_non_null(strstr(body, "\"handler-7\" waits to read-lock \"client-cache\""));
  assert_non_null(strstr(body, "\"config-watcher\" waits to write-lock \"client-cache\""));
  assert_non_null(strstr(body, "[rwlock.rdlock client-cache, "));
  assert_non_null(strstr(body, "task: msg 0a1b2c3d4e5f6071 resource=acct-42"));
  assert_non_null(strstr(body, "RECURSIVE READ LOCKS"));
  free(body);

  assert_int_equal(rvt_http(port, "GET", "/debug/threads?format=json", NULL, &body), 200);
  json_error_t err;
  json_t *j = json_loads(body, 0, &err);
  assert_non_null(j);
  json_t *dl = json_object_get(j, "deadlocks");
  assert_int_equal(json_array_size(dl), 1);
  json_t *cycle = json_object_get(json_array_get(dl, 0), "cycle");
  assert_int_equal(json_array_size(cycle), 2);
  assert_int_equal(json_integer_value(json_object_get(json_array_get(dl, 0), "blocked_behind")), 1);
  assert_true(json_array_size(json_object_get(j, "threads")) >= 4);
  json_decref(j);
  free(body);

  assert_int_equal(rvt_http(port, "GET", "/debug/locks", NULL, &body), 200);
  assert_non_null(strstr(body, "rwlock \"client-cache\""));
  assert_non_null(strstr(body, "held (read) by thread"));
  assert_non_null(strstr(body, "awaited (write) by thread"));
  free(body);
  assert_int_equal(rvt_http(port, "GET", "/debug/locks?format=json", NULL, &body), 200);
  j = json_loads(body, 0, &err);
  assert_non_null(j);
  json_decref(j);
  free(body);

  assert_int_equal(rvt_http(port, "GET", "/metrics", NULL, &body), 200);
  assert_non_null(strstr(body, "ravel_deadlocked_threads 2"));
  assert_non_null(strstr(body, "ravel_deadlock_blocked_threads 1"));
  assert_non_null(strstr(body, "ravel_lock_waiters{lock=\"client-cache\",mode=\"read\"} 2"));
  assert_non_null(strstr(body, "ravel_lock_waiters{lock=\"client-cache\",mode=\"write\"} 1"));
  assert_non_null(strstr(body, "ravel_threads{state=\"rwlock.rdlock\"} 2"));
  free(body);

  rv_ctx_cancel(w.ctx, "test over");
  rv_thread_join(h);
  rv_thread_join(wt);
  rv_thread_join(b);
  rv_ctx_free(w.ctx);
  rv_rwlock_destroy(&w.cache);
  rv_mutex_destroy(&w.mu);
  rv_cond_destroy(&w.cv);
  rv_admin_stop(a);
  rv_metrics_free(m);
}

static void test_duration_format(void **state) {
  char b[32];
  rv_format_duration(340 * RV_NS_PER_MS, b, sizeof b);
  assert_string_equal(b, "340ms");
  rv_format_duration(1500 * RV_NS_PER_MS, b, sizeof b);
  assert_string_equal(b, "1.500s");
  rv_format_duration((5 * 60 + 12) * RV_NS_PER_S, b, sizeof b);
  assert_string_equal(b, "5m12s");
  rv_format_duration((2 * 3600 + 3 * 60 + 4) * RV_NS_PER_S, b, sizeof b);
  assert_string_equal(b, "2h3m4s");
}

/* `test_admin --metrics-sample`: print a live /metrics exposition for promtool. */
static int print_metrics_sample(void) {
  rv_metrics *m = rv_metrics_new();
  rv_admin *a;
  if (rv_admin_start(&a, &(rv_admin_opts){.metrics = m}) != RV_OK)
    return 1;
  rv_rwlock rw;
  rv_rwlock_init(&rw, "sample \"quoted\" lock");
  rv_rwlock_rdlock(&rw);
  char *body;
  int status = rvt_http(rv_admin_port(a), "GET", "/metrics", NULL, &body);
  rv_rwlock_rdunlock(&rw);
  if (status != 200)
    return 1;
  fputs(body, stdout);
  free(body);
  rv_admin_stop(a);
  rv_metrics_free(m);
  return 0;
}

int main(int argc, char **argv) {
  rv_thread_adopt("main", "test");
  if (argc > 1 && strcmp(argv[1], "--metrics-sample") == 0)
    return print_metrics_sample();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_admin_serves_dump_of_deadlocked_process),
      cmocka_unit_test(test_duration_format),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
