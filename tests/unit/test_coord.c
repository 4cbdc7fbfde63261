/*
 * coord over a real socket, driven by hiredis (a real Redis client): sessions,
 * FIFO hand-off, timeouts, cancellation by closing the connection and by
 * LOCK.CANCEL, session expiry, lock-delay, stale releases, fencing tokens
 * across a restart, protocol errors, and the admin endpoint.
 */
#include "support.h"

#include "server/coord.h"

#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct server {
  rv_coord *coord;
  rv_log *log;
  rv_thread *thread;
  char dir[64];
  uint16_t port, admin_port;
} server;

static void serve(void *arg) { rv_coord_run(((server *)arg)->coord); }

static void server_start(server *s, int64_t lock_delay_ns) {
  if (!s->dir[0]) {
    snprintf(s->dir, sizeof s->dir, "/tmp/ravel-coord-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
  }
  s->log = rv_log_new(2, RV_LOG_WARN, "coord");
  rv_coord_opts o = {.port_any = true, .data_dir = s->dir, .lock_delay_ns = lock_delay_ns,
                     .log = s->log};
  char why[256];
  assert_int_equal(rv_coord_start(&s->coord, &o, why, sizeof why), RV_OK);
  s->port = rv_coord_port(s->coord);
  s->admin_port = rv_coord_admin_port(s->coord);
  assert_int_equal(rv_thread_start(&s->thread, "coord-loop", "server", serve, s), RV_OK);
}

static void server_stop(server *s) {
  rv_coord_stop(s->coord);
  rv_thread_join(s->thread);
  rv_coord_free(s->coord);
  rv_log_free(s->log);
}

static void server_cleanup(server *s) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
  assert_int_equal(system(cmd), 0);
}

static redisContext *client(const server *s) {
  redisContext *r = redisConnect("127.0.0.1", s->port);
  assert_non_null(r);
  assert_int_equal(r->err, 0);
  return r;
}

/* Run a command that must answer with an integer; return it. */
static long long cmd_int(redisContext *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  assert_non_null(rep);
  if (rep->type != REDIS_REPLY_INTEGER)
    fail_msg("expected an integer, got type %d: %s", rep->type, rep->str ? rep->str : "");
  long long v = rep->integer;
  freeReplyObject(rep);
  return v;
}

/* Run a command; return its reply (caller frees). */
static redisReply *cmd(redisContext *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  assert_non_null(rep);
  return rep;
}

static void expect_error(redisContext *r, const char *prefix, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  redisReply *rep = redisvCommand(r, fmt, ap);
  va_end(ap);
  assert_non_null(rep);
  if (rep->type != REDIS_REPLY_ERROR || strncmp(rep->str, prefix, strlen(prefix)) != 0)
    fail_msg("expected error '%s...', got type %d '%s'", prefix, rep->type, rep->str ? rep->str : "");
  freeReplyObject(rep);
}

/* A flat-map reply's integer field. */
static long long map_int(const redisReply *m, const char *key) {
  for (size_t i = 0; i + 1 < m->elements; i += 2)
    if (strcmp(m->element[i]->str, key) == 0)
      return m->element[i + 1]->integer;
  fail_msg("no field %s", key);
  return -1;
}

static long long lock_waiters(redisContext *r, const char *name) {
  redisReply *rep = cmd(r, "LOCK.INFO %s", name);
  long long n = rep->type == REDIS_REPLY_NIL ? 0 : map_int(rep, "waiter_count");
  freeReplyObject(rep);
  return n;
}

/* ---- a waiter on its own connection and thread ------------------------------------------ */

typedef struct waiter {
  const server *s;
  long long session;
  const char *lock;
  const char *extra; /* e.g. "WAIT 100" */
  int reply_type;
  long long token;
  char err[256];
  int64_t granted_at;
} waiter;

static void wait_thread(void *arg) {
  waiter *w = arg;
  redisContext *r = client(w->s);
  redisReply *rep = w->extra ? redisCommand(r, "LOCK.ACQUIRE %lld %s %s", w->session, w->lock, w->extra)
                             : redisCommand(r, "LOCK.ACQUIRE %lld %s", w->session, w->lock);
  w->granted_at = rv_now_ns();
  w->reply_type = rep ? rep->type : -1;
  if (rep && rep->type == REDIS_REPLY_INTEGER)
    w->token = rep->integer;
  if (rep && rep->type == REDIS_REPLY_ERROR)
    snprintf(w->err, sizeof w->err, "%s", rep->str);
  if (rep)
    freeReplyObject(rep);
  redisFree(r);
}

typedef struct waiters_at {
  redisContext *r;
  const char *lock;
  long long n;
} waiters_at;

static bool have_waiters(void *arg) {
  waiters_at *w = arg;
  return lock_waiters(w->r, w->lock) == w->n;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_sessions_and_errors(void **state) {
  server s = {0};
  server_start(&s, 0);
  redisContext *r = client(&s);
  redisReply *rep = cmd(r, "PING");
  assert_string_equal(rep->str, "PONG");
  freeReplyObject(rep);
  long long sid = cmd_int(r, "SESSION.OPEN 5000 SERVICE billing REPLICA 2 PID 77 HOST h1 ADMIN http://127.0.0.1:9/");
  assert_true(sid > 0);
  assert_true(cmd_int(r, "SESSION.KEEPALIVE %lld", sid) > 4000);
  rep = cmd(r, "SESSION.INFO %lld", sid);
  assert_int_equal(rep->type, REDIS_REPLY_ARRAY);
  assert_int_equal(map_int(rep, "pid"), 77);
  freeReplyObject(rep);
  expect_error(r, "BADTTL", "SESSION.OPEN 0 SERVICE x");
  expect_error(r, "ERR wrong arguments", "SESSION.OPEN");
  expect_error(r, "ERR unknown option 'COLOR'", "SESSION.OPEN 1000 COLOR red");
  expect_error(r, "NOSESSION", "SESSION.KEEPALIVE 12345");
  expect_error(r, "ERR unknown command 'FLUSHALL'", "FLUSHALL");
  expect_error(r, "BADNAME", "LOCK.ACQUIRE %lld %s", sid, "has space");
  rep = cmd(r, "SESSION.CLOSE %lld", sid);
  assert_string_equal(rep->str, "OK");
  freeReplyObject(rep);
  expect_error(r, "NOSESSION", "SESSION.KEEPALIVE %lld", sid);
  redisFree(r);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_fifo_handoff_and_tokens(void **state) {
  server s = {0};
  server_start(&s, 0);
  redisContext *r = client(&s);
  long long holder = cmd_int(r, "SESSION.OPEN 10000 SERVICE svc REPLICA 0");
  long long t0 = cmd_int(r, "LOCK.ACQUIRE %lld acct-42 DESC holder", holder);
  enum { N = 5 };
  waiter w[N];
  rv_thread *t[N];
  long long sessions[N];
  for (int i = 0; i < N; i++) {
    sessions[i] = cmd_int(r, "SESSION.OPEN 10000 SERVICE svc REPLICA %d", i + 1);
    w[i] = (waiter){.s = &s, .session = sessions[i], .lock = "acct-42"};
    assert_int_equal(rv_thread_start(&t[i], "waiter", "test", wait_thread, &w[i]), RV_OK);
    waiters_at wa = {r, "acct-42", i + 1};
    assert_true(rvt_await(have_waiters, &wa)); /* queued in this order */
  }
  /* NOWAIT and a bounded WAIT on a held lock answer nil. */
  long long other = cmd_int(r, "SESSION.OPEN 10000 SERVICE other");
  redisReply *rep = cmd(r, "LOCK.ACQUIRE %lld acct-42 NOWAIT", other);
  assert_int_equal(rep->type, REDIS_REPLY_NIL);
  freeReplyObject(rep);
  rep = cmd(r, "LOCK.ACQUIRE %lld acct-42 WAIT 20", other);
  assert_int_equal(rep->type, REDIS_REPLY_NIL);
  freeReplyObject(rep);

  /* Release in turn: each waiter is granted in FIFO order with a larger token. */
  long long prev = t0, prev_session = holder;
  for (int i = 0; i < N; i++) {
    rep = cmd(r, "LOCK.RELEASE %lld acct-42 %lld", prev_session, prev);
    assert_string_equal(rep->str, "OK");
    freeReplyObject(rep);
    rv_thread_join(t[i]);
    assert_int_equal(w[i].reply_type, REDIS_REPLY_INTEGER);
    assert_true(w[i].token > prev);
    /* A stale release (the previous token) never frees the new holder's lock. */
    expect_error(r, "NOTOWNER", "LOCK.RELEASE %lld acct-42 %lld", prev_session, prev);
    prev = w[i].token;
    prev_session = sessions[i];
  }
  expect_error(r, "STALE", "LOCK.RELEASE %lld acct-42 %lld", prev_session, prev - 1);
  rep = cmd(r, "LOCK.RELEASE %lld acct-42 %lld", prev_session, prev);
  assert_string_equal(rep->str, "OK");
  freeReplyObject(rep);
  redisFree(r);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_cancel_by_close_and_by_command(void **state) {
  server s = {0};
  server_start(&s, 0);
  redisContext *r = client(&s);
  long long a = cmd_int(r, "SESSION.OPEN 10000 SERVICE a");
  long long b = cmd_int(r, "SESSION.OPEN 10000 SERVICE b");
  cmd_int(r, "LOCK.ACQUIRE %lld res", a);

  /* A waiter whose connection closes leaves the queue at once. */
  rv_conn *raw;
  assert_int_equal(rv_tcp_connect(&raw, "127.0.0.1", s.port, NULL), RV_OK);
  char req[128];
  int n = snprintf(req, sizeof req, "LOCK.ACQUIRE %lld res\r\n", b);
  assert_int_equal(rv_conn_write_all(raw, req, (size_t)n, NULL), RV_OK);
  waiters_at one = {r, "res", 1}, none = {r, "res", 0};
  assert_true(rvt_await(have_waiters, &one));
  rv_conn_close(raw);
  assert_true(rvt_await(have_waiters, &none));

  /* LOCK.CANCEL from another connection answers the blocked one with -CANCELLED. */
  waiter w = {.s = &s, .session = b, .lock = "res"};
  rv_thread *t;
  assert_int_equal(rv_thread_start(&t, "waiter", "test", wait_thread, &w), RV_OK);
  assert_true(rvt_await(have_waiters, &one));
  assert_int_equal(cmd_int(r, "LOCK.CANCEL %lld res", b), 1);
  rv_thread_join(t);
  assert_int_equal(w.reply_type, REDIS_REPLY_ERROR);
  assert_non_null(strstr(w.err, "CANCELLED"));
  assert_int_equal(lock_waiters(r, "res"), 0);
  redisFree(r);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_session_expiry_and_lock_delay(void **state) {
  const int64_t delay_ns = 300 * RV_NS_PER_MS;
  server s = {0};
  server_start(&s, delay_ns);
  redisContext *r = client(&s);
  long long live = cmd_int(r, "SESSION.OPEN 60000 SERVICE live");
  int64_t opened_at = rv_now_ns(); /* the TTL runs from the server's open, which is later */
  long long dying = cmd_int(r, "SESSION.OPEN 200 SERVICE dying");
  cmd_int(r, "LOCK.ACQUIRE %lld res", dying);
  waiter w = {.s = &s, .session = live, .lock = "res"};
  rv_thread *t;
  assert_int_equal(rv_thread_start(&t, "waiter", "test", wait_thread, &w), RV_OK);
  /* No keepalive: the session expires (>= 200 ms), then the lock-delay (300 ms) runs. */
  rv_thread_join(t);
  assert_int_equal(w.reply_type, REDIS_REPLY_INTEGER);
  assert_true(w.granted_at - opened_at >= 200 * RV_NS_PER_MS + delay_ns);
  expect_error(r, "NOSESSION", "SESSION.KEEPALIVE %lld", dying);
  redisFree(r);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_tokens_increase_across_restart(void **state) {
  server s = {0};
  server_start(&s, 0);
  redisContext *r = client(&s);
  long long sid = cmd_int(r, "SESSION.OPEN 10000 SERVICE x");
  long long first = cmd_int(r, "LOCK.ACQUIRE %lld t", sid);
  redisFree(r);
  server_stop(&s);
  server_start(&s, 0); /* same data dir */
  r = client(&s);
  expect_error(r, "NOSESSION", "SESSION.KEEPALIVE %lld", sid); /* sessions do not survive */
  long long sid2 = cmd_int(r, "SESSION.OPEN 10000 SERVICE x");
  assert_true(sid2 != sid);
  long long second = cmd_int(r, "LOCK.ACQUIRE %lld t", sid2);
  assert_true(second > first);
  redisFree(r);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_protocol_error_closes_only_that_client(void **state) {
  server s = {0};
  server_start(&s, 0);
  redisContext *good = client(&s);
  rv_conn *bad;
  assert_int_equal(rv_tcp_connect(&bad, "127.0.0.1", s.port, NULL), RV_OK);
  const char *garbage = "*2\r\n$-7\r\nxx\r\n";
  assert_int_equal(rv_conn_write_all(bad, garbage, strlen(garbage), NULL), RV_OK);
  char buf[256] = {0};
  size_t got = 0;
  ssize_t n;
  while ((n = rv_conn_read(bad, buf + got, sizeof buf - 1 - got, NULL)) > 0)
    got += (size_t)n; /* until the server closes */
  assert_non_null(strstr(buf, "-ERR Protocol error"));
  rv_conn_close(bad);
  redisReply *rep = cmd(good, "PING");
  assert_string_equal(rep->str, "PONG");
  freeReplyObject(rep);

  char *body;
  assert_int_equal(rvt_http(s.admin_port, "GET", "/metrics", NULL, &body), 200);
  assert_non_null(strstr(body, "ravel_coord_commands_total"));
  assert_non_null(strstr(body, "ravel_coord_sessions 0"));
  free(body);
  assert_int_equal(rvt_http(s.admin_port, "GET", "/healthz", NULL, &body), 200);
  free(body);
  redisFree(good);
  server_stop(&s);
  server_cleanup(&s);
}

/* A flat map's string field, or NULL for nil. */
static const char *map_str(const redisReply *m, const char *key) {
  for (size_t i = 0; i + 1 < m->elements; i += 2)
    if (strcmp(m->element[i]->str, key) == 0)
      return m->element[i + 1]->type == REDIS_REPLY_NIL ? NULL : m->element[i + 1]->str;
  fail_msg("no field %s", key);
  return NULL;
}

typedef struct poller {
  const server *s;
  const char *target;
  long long since;
  redisReply *reply;
} poller;

static void poll_thread(void *arg) {
  poller *p = arg;
  redisContext *r = client(p->s);
  p->reply = redisCommand(r, "CFG.WATCH %s SINCE %lld TIMEOUT 20000", p->target, p->since);
  redisFree(r);
}

static bool watch_open(void *arg) {
  redisContext *r = arg;
  redisReply *rep = cmd(r, "CFG.TARGETS billing");
  bool open = rep->elements >= 1 && map_int(rep->element[0], "watches") >= 1;
  freeReplyObject(rep);
  return open;
}

/*
 * The incident's config pattern: a platform write that billing overrides, a
 * write of the same value, and a write that really changes what billing sees.
 * Only the last notifies billing's watch; the dry run says who it reaches.
 */
static void test_config_effective_watch_dryrun_audit(void **state) {
  server s = {0};
  server_start(&s, 0);
  redisContext *r = client(&s);
  cmd_int(r, "SESSION.OPEN 10000 SERVICE billing REPLICA 1");
  cmd_int(r, "SESSION.OPEN 10000 SERVICE search");
  long long r1 = cmd_int(r, "CFG.SET platform upstream.url https://a AUTHOR ops REASON %s", "first");
  long long r2 = cmd_int(r, "CFG.SET svc/billing timeout_ms 500 AUTHOR billing-team");
  assert_true(r2 > r1);

  /* Dry run of a platform change: both services inherit it. */
  redisReply *rep = cmd(r, "CFG.DRYRUN platform upstream.url https://b");
  assert_int_equal(map_int(rep, "changes"), 3); /* billing, billing/1, search */
  freeReplyObject(rep);
  /* billing overrides timeout_ms: a platform write of it reaches only search. */
  rep = cmd(r, "CFG.DRYRUN platform timeout_ms 900 ALL");
  assert_int_equal(map_int(rep, "changes"), 1);
  assert_int_equal(map_int(rep, "unaffected"), 2);
  freeReplyObject(rep);

  /* A watch on billing, from the current revision. */
  poller p = {.s = &s, .target = "billing", .since = r2};
  rv_thread *t;
  assert_int_equal(rv_thread_start(&t, "watch", "test", poll_thread, &p), RV_OK);
  assert_true(rvt_await(watch_open, r));
  cmd_int(r, "CFG.SET platform timeout_ms 900 AUTHOR other-team");       /* overridden */
  cmd_int(r, "CFG.SET svc/billing timeout_ms 500 AUTHOR billing-team");  /* same value */
  long long r5 = cmd_int(r, "CFG.SET platform upstream.url https://b AUTHOR other-team");
  rv_thread_join(t);
  assert_non_null(p.reply);
  assert_int_equal(p.reply->type, REDIS_REPLY_ARRAY);
  assert_int_equal(p.reply->element[0]->integer, r5);
  redisReply *events = p.reply->element[1];
  assert_int_equal(events->elements, 1); /* only the change billing sees */
  assert_int_equal(map_int(events->element[0], "revision"), r5);
  assert_string_equal(map_str(events->element[0], "old"), "https://a");
  assert_string_equal(map_str(events->element[0], "new"), "https://b");
  freeReplyObject(p.reply);

  /* Resume from an old revision: exactly the missed changes, none repeated. */
  rep = cmd(r, "CFG.WATCH billing SINCE %lld TIMEOUT 0", r1);
  assert_int_equal(rep->element[0]->integer, r5);
  assert_int_equal(rep->element[1]->elements, 2); /* timeout_ms 500 (r2), upstream.url (r5) */
  freeReplyObject(rep);

  /* Compare-and-set, audit, rollback. */
  expect_error(r, "CONFLICT", "CFG.SET platform upstream.url https://c IFREV %lld", r1);
  long long r6 = cmd_int(r, "CFG.SET platform upstream.url https://c IFREV %lld AUTHOR ops", r5);
  rep = cmd(r, "CFG.AUDIT NS platform KEY upstream.url");
  assert_int_equal(rep->elements, 3);
  assert_string_equal(map_str(rep->element[2], "author"), "ops");
  freeReplyObject(rep);
  long long r7 = cmd_int(r, "CFG.ROLLBACK platform upstream.url %lld AUTHOR ops REASON undo", r1);
  assert_true(r7 > r6);
  rep = cmd(r, "CFG.EFFECTIVE billing/1 upstream.url");
  assert_string_equal(map_str(rep, "value"), "https://a");
  assert_string_equal(map_str(rep, "layer"), "platform");
  freeReplyObject(rep);
  expect_error(r, "BADNS", "CFG.SET nowhere k v");
  redisFree(r);

  /* Config is durable: a restart keeps every write and the revision counter. */
  server_stop(&s);
  server_start(&s, 0);
  r = client(&s);
  rep = cmd(r, "CFG.GET platform upstream.url");
  assert_string_equal(map_str(rep, "value"), "https://a");
  freeReplyObject(rep);
  assert_int_equal(cmd_int(r, "CFG.REVISION"), r7);
  assert_true(cmd_int(r, "CFG.SET platform k v AUTHOR ops") == r7 + 1);
  redisFree(r);
  server_stop(&s);
  server_cleanup(&s);
}

int main(void) {
  rv_thread_adopt("main", "test");
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sessions_and_errors),
      cmocka_unit_test(test_fifo_handoff_and_tokens),
      cmocka_unit_test(test_cancel_by_close_and_by_command),
      cmocka_unit_test(test_session_expiry_and_lock_delay),
      cmocka_unit_test(test_tokens_increase_across_restart),
      cmocka_unit_test(test_protocol_error_closes_only_that_client),
      cmocka_unit_test(test_config_effective_watch_dryrun_audit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
