// ctest-timeout: 150
#define _GNU_SOURCE
/*
 * libravel's queue client (src/client/queue_client.h) against an in-process
 * ravel queue server on free ports with a temporary data dir: publish (PUB,
 * MPUB, DPUB) with acknowledgement, server errors, reconnect after a server
 * restart, bounded buffering under many publishing threads; consuming with
 * FIN and REQ(delay); the timeout options (server notification, local clock,
 * auto-touch, held slots), each on and off; late FINs; handler threads in the
 * thread registry.
 *
 * Threads: the test thread drives; the server loop runs on "queue-loop"; the
 * client's reader and handler threads are the library's.  Every wait is
 * bounded (RVT_BOUND_NS) and decided by observed state.
 */
#include "support.h"

#include "server/queue.h"

#include "client/queue_client.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

/* ---- in-process server -------------------------------------------------------- */

typedef struct server {
  rv_qsrv *q;
  rv_log *log;
  rv_thread *thread;
  char dir[64];
  uint16_t port;
  bool no_extensions;
  int64_t max_msg_size;
} server;

static void serve(void *arg) { rv_qsrv_run(((server *)arg)->q); }

/* Start; a restart (port already set) binds the same TCP port, without HTTP. */
static void server_start(server *s) {
  if (!s->dir[0]) {
    snprintf(s->dir, sizeof s->dir, "/tmp/ravel-cqueue-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
  }
  s->log = rv_log_new(2, RV_LOG_ERROR, "queue");
  rv_qsrv_opts o = {.data_dir = s->dir,
                    .log = s->log,
                    .no_extensions = s->no_extensions,
                    .max_msg_size = s->max_msg_size};
  if (s->port) {
    o.tcp_port = s->port;
    o.no_http = true;
  } else {
    o.port_any = true;
  }
  char why[256];
  int rc = RV_EIO;
  /* The old socket may linger a moment after a stop. */
  for (int i = 0; i < 100 && rc != RV_OK; i++) {
    rc = rv_qsrv_start(&s->q, &o, why, sizeof why);
    if (rc != RV_OK)
      rv_sleep(NULL, 20 * RV_NS_PER_MS);
  }
  if (rc != RV_OK)
    fail_msg("queue did not start: %s", why);
  s->port = rv_qsrv_tcp_port(s->q);
  assert_int_equal(rv_thread_start(&s->thread, "queue-loop", "server", serve, s), RV_OK);
}

static void server_stop(server *s) {
  rv_qsrv_stop(s->q);
  rv_thread_join(s->thread);
  rv_qsrv_free(s->q);
  rv_log_free(s->log);
}

static void server_cleanup(server *s) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", s->dir);
  assert_int_equal(system(cmd), 0);
}

static rv_producer *producer(const server *s) {
  rv_producer *p = NULL;
  rv_producer_opts o = {.host = "127.0.0.1", .port = s->port};
  assert_int_equal(rv_producer_open(&p, NULL, &o), RV_OK);
  return p;
}

static void pub(rv_producer *p, const char *topic, const char *body) {
  assert_int_equal(rv_producer_pub(NULL, p, topic, body, strlen(body)), RV_OK);
}

/* ---- what handlers saw ----------------------------------------------------------- */

#define REC_MAX 512
#define SLOW_SLEEP_NS (30 * RV_NS_PER_S)

typedef struct seen {
  char body[64];
  char id[RV_NSQ_MSG_ID_SIZE_BYTES + 1];
  uint16_t attempts;
  int64_t at_ns;
} seen;

typedef struct rec {
  rv_mutex mu;
  int n;
  seen got[REC_MAX];
  rv_ctx *release;       /* blocked handlers wait on it */
  int64_t started_ns;
  /* the first attempt's handler */
  bool first_done;
  int first_rc;
  int first_ctx_err;
  char first_reason[RV_CTX_REASON_MAX];
  int64_t first_elapsed_ns;
  int64_t requeue_delay_ms;
} rec;

static void rec_init(rec *r) {
  memset(r, 0, sizeof *r);
  rv_mutex_init(&r->mu, "test-rec");
  r->release = rv_ctx_new(NULL);
  r->started_ns = rv_now_ns();
}

static void rec_free(rec *r) {
  rv_ctx_free(r->release);
  rv_mutex_destroy(&r->mu);
}

static void rec_add(rec *r, const rv_message *m) {
  rv_mutex_lock(&r->mu);
  if (r->n < REC_MAX) {
    seen *s = &r->got[r->n++];
    size_t k = m->len < sizeof s->body - 1 ? m->len : sizeof s->body - 1;
    memcpy(s->body, m->body, k);
    s->body[k] = 0;
    memcpy(s->id, m->id_str, sizeof s->id);
    s->attempts = m->attempts;
    s->at_ns = rv_now_ns();
  }
  rv_mutex_unlock(&r->mu);
}

static int rec_count(rec *r) {
  rv_mutex_lock(&r->mu);
  int n = r->n;
  rv_mutex_unlock(&r->mu);
  return n;
}

static void rec_first(rec *r, int rc, rv_ctx *ctx, int64_t delivered) {
  rv_mutex_lock(&r->mu);
  r->first_rc = rc;
  r->first_ctx_err = rv_ctx_err(ctx);
  snprintf(r->first_reason, sizeof r->first_reason, "%s", rv_ctx_reason(ctx));
  r->first_elapsed_ns = rv_now_ns() - delivered;
  r->first_done = true;
  rv_mutex_unlock(&r->mu);
}

static bool rec_first_done(void *arg) {
  rec *r = arg;
  rv_mutex_lock(&r->mu);
  bool d = r->first_done;
  rv_mutex_unlock(&r->mu);
  return d;
}

/* Finish everything. */
static int h_fin(rv_ctx *ctx, const rv_message *m, void *arg) {
  rec_add(arg, m);
  return RV_MSG_FINISH;
}

/* Requeue the first attempt with the recorded delay, finish the next. */
static int h_req_then_fin(rv_ctx *ctx, const rv_message *m, void *arg) {
  rec *r = arg;
  rec_add(r, m);
  if (m->attempts == 1) {
    rv_message_set_requeue_delay(m, r->requeue_delay_ms);
    return RV_MSG_REQUEUE;
  }
  return RV_MSG_FINISH;
}

/* First attempt: block on the message's own context (30 s), record how it
 * ended.  Later attempts: finish. */
static int h_block_on_ctx(rv_ctx *ctx, const rv_message *m, void *arg) {
  rec *r = arg;
  rec_add(r, m);
  if (m->attempts == 1) {
    int rc = rv_sleep(ctx, SLOW_SLEEP_NS);
    rec_first(r, rc, ctx, m->delivered_ns);
  }
  return RV_MSG_FINISH;
}

/* First attempt: block until the test releases it, then report whether the
 * message's context was cancelled meanwhile.  Later attempts: finish. */
static int h_block_on_release(rv_ctx *ctx, const rv_message *m, void *arg) {
  rec *r = arg;
  rec_add(r, m);
  if (m->attempts == 1) {
    int rc = rv_sleep(r->release, SLOW_SLEEP_NS);
    rec_first(r, rc, ctx, m->delivered_ns);
  }
  return RV_MSG_FINISH;
}

/* Every attempt blocks until released. */
static int h_block_all(rv_ctx *ctx, const rv_message *m, void *arg) {
  rec *r = arg;
  rec_add(r, m);
  rv_sleep(r->release, SLOW_SLEEP_NS);
  return RV_MSG_FINISH;
}

/* A 2.5 s handler that must not be cancelled. */
#define LONG_HANDLER_NS (2500 * RV_NS_PER_MS)
static int h_long(rv_ctx *ctx, const rv_message *m, void *arg) {
  rec *r = arg;
  rec_add(r, m);
  if (m->attempts == 1) {
    int rc = rv_sleep(ctx, LONG_HANDLER_NS);
    rec_first(r, rc, ctx, m->delivered_ns);
  }
  return RV_MSG_FINISH;
}

static rv_consumer *consumer(const server *s, rv_consumer_opts *o, rv_msg_handler h, rec *r) {
  o->host = "127.0.0.1";
  o->port = s->port;
  if (!o->topic)
    o->topic = "jobs";
  if (!o->channel)
    o->channel = "workers";
  o->handler = h;
  o->handler_arg = r;
  rv_consumer *c = NULL;
  assert_int_equal(rv_consumer_open(&c, o), RV_OK);
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, RVT_BOUND_NS);
  assert_int_equal(rv_consumer_wait_ready(c, ctx), RV_OK);
  rv_ctx_free(ctx);
  return c;
}

/* Polling predicates over consumer stats. */
typedef struct want {
  rv_consumer *c;
  rec *r;
  int n;
} want;

static bool have_n(void *arg) {
  want *w = arg;
  return rec_count(w->r) >= w->n;
}

static bool settled(void *arg) { /* n received, none in flight, threads gone */
  want *w = arg;
  rv_consumer_stats st;
  rv_consumer_stats_get(w->c, &st);
  return st.received >= (uint64_t)w->n && st.in_flight == 0;
}

static bool late_fin_seen(void *arg) {
  want *w = arg;
  rv_consumer_stats st;
  rv_consumer_stats_get(w->c, &st);
  return st.late_fins >= (uint64_t)w->n;
}

static bool finished_n(void *arg) {
  want *w = arg;
  rv_consumer_stats st;
  rv_consumer_stats_get(w->c, &st);
  return st.finished >= (uint64_t)w->n;
}

static bool notified_n(void *arg) {
  want *w = arg;
  rv_consumer_stats st;
  rv_consumer_stats_get(w->c, &st);
  return st.timeouts_notified >= (uint64_t)w->n;
}

static bool no_handler_threads(void *arg) {
  want *w = arg;
  rv_consumer_stats st;
  rv_consumer_stats_get(w->c, &st);
  return st.handler_threads_alive == 0;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_pub_mpub_dpub_consumed(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  /* max_in_flight 1: one handler at a time, so handlers see delivery order. */
  rv_consumer_opts o = {.max_in_flight = 1};
  rv_consumer *c = consumer(&s, &o, h_fin, &r);

  pub(p, "jobs", "one");
  const void *bodies[] = {"two", "three", "four"};
  size_t lens[] = {3, 5, 4};
  assert_int_equal(rv_producer_mpub(NULL, p, "jobs", bodies, lens, 3), RV_OK);
  int64_t dpub_at = rv_now_ns();
  assert_int_equal(rv_producer_dpub(NULL, p, "jobs", 300, "later", 5), RV_OK);

  want w = {c, &r, 5};
  assert_true(rvt_await(settled, &w));
  assert_true(rvt_await(finished_n, &w));
  const char *expect[] = {"one", "two", "three", "four", "later"};
  for (int i = 0; i < 5; i++)
    assert_string_equal(r.got[i].body, expect[i]);
  /* DPUB: not before its deferral. */
  assert_true(r.got[4].at_ns - dpub_at >= 290 * RV_NS_PER_MS);

  rv_producer_stats ps;
  rv_producer_stats_get(p, &ps);
  assert_int_equal(ps.published, 5);
  assert_int_equal(ps.requests_ok, 3);
  assert_int_equal(ps.inflight_requests, 0);
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.finished, 5);
  assert_int_equal(cs.late_fins, 0);
  assert_false(cs.timeout_notify_granted); /* not asked for */
  assert_false(cs.hold_slots_granted);

  /* The codec refuses a bad name before anything goes on the wire. */
  assert_int_equal(rv_producer_pub(NULL, p, "bad topic!", "x", 1), RV_EINVAL);

  assert_int_equal(rv_consumer_stop(c), RV_OK);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* A server error comes back as RV_EPROTO with its code and text; the
 * connection it closed is replaced for the next publish. */
static void test_server_error_then_reconnect(void **state) {
  server s = {.max_msg_size = 64};
  server_start(&s);
  rv_producer *p = producer(&s);
  char big[128];
  memset(big, 'x', sizeof big);
  assert_int_equal(rv_producer_pub(NULL, p, "jobs", big, sizeof big), RV_EPROTO);
  const rv_nsq_error *e = rv_queue_last_error();
  assert_int_equal(e->code, RV_NSQ_E_BAD_MESSAGE);
  assert_non_null(strstr(e->text, "E_BAD_MESSAGE"));
  pub(p, "jobs", "fine");
  assert_int_equal(rv_queue_last_error()->code, RV_NSQ_OK);
  rv_producer_stats ps;
  rv_producer_stats_get(p, &ps);
  assert_int_equal(ps.server_errors, 1);
  assert_int_equal(ps.connects, 2);
  rv_producer_close(p);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_fin_and_req_delay(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  r.requeue_delay_ms = 300;
  rv_consumer_opts o = {.max_in_flight = 1};
  rv_consumer *c = consumer(&s, &o, h_req_then_fin, &r);
  pub(p, "jobs", "retry-me");
  want w = {c, &r, 2};
  assert_true(rvt_await(settled, &w));
  assert_int_equal(r.got[0].attempts, 1);
  assert_int_equal(r.got[1].attempts, 2);
  assert_string_equal(r.got[0].id, r.got[1].id);
  assert_true(r.got[1].at_ns - r.got[0].at_ns >= 290 * RV_NS_PER_MS);
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.requeued, 1);
  assert_int_equal(cs.finished, 1);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* With cancel_on_server_timeout the blocked handler's context is cancelled
 * when the server's type-3 frame names its message. */
static void test_cancel_on_server_timeout(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 1, .msg_timeout_ms = 1000,
                        .cancel_on_server_timeout = true};
  rv_consumer *c = consumer(&s, &o, h_block_on_ctx, &r);
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_true(cs.timeout_notify_granted);
  assert_int_equal(cs.msg_timeout_ms, 1000);
  pub(p, "jobs", "slow");
  assert_true(rvt_await(rec_first_done, &r));
  assert_int_equal(r.first_rc, RV_ECANCELED);
  char want_reason[RV_CTX_REASON_MAX];
  snprintf(want_reason, sizeof want_reason, "message %s timed out (server)", r.got[0].id);
  assert_string_equal(r.first_reason, want_reason);
  /* Cancelled at the timeout, not at the 30 s sleep's end. */
  assert_true(r.first_elapsed_ns >= 900 * RV_NS_PER_MS);
  assert_true(r.first_elapsed_ns < 5 * RV_NS_PER_S);
  want w = {c, &r, 1};
  assert_true(rvt_await(notified_n, &w));
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.handlers_cancelled, 1);
  assert_int_equal(cs.local_timeouts, 0);
  w.n = 2; /* the redelivery, finished */
  assert_true(rvt_await(settled, &w));
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* With the option off the handler is not cancelled: it keeps running while
 * the server redelivers its message (here to this very consumer).  Its FIN,
 * sent after the redelivery was finished, is late: counted, and the
 * connection goes on. */
static void test_no_cancel_without_option_and_late_fin(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 1, .msg_timeout_ms = 1000};
  rv_consumer *c = consumer(&s, &o, h_block_on_release, &r);
  pub(p, "jobs", "slow");
  want w = {c, &r, 2};
  assert_true(rvt_await(have_n, &w)); /* redelivered while the first still runs */
  assert_int_equal(r.got[1].attempts, 2);
  w.n = 1;
  assert_true(rvt_await(finished_n, &w)); /* attempt 2 finished first */
  assert_false(rec_first_done(&r));
  rv_ctx_cancel(r.release, "test releases the first handler");
  assert_true(rvt_await(rec_first_done, &r));
  assert_int_equal(r.first_ctx_err, 0); /* never cancelled */
  assert_true(r.first_elapsed_ns >= 900 * RV_NS_PER_MS);
  assert_true(rvt_await(late_fin_seen, &w));
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.timeouts_notified, 0);
  assert_int_equal(cs.handlers_cancelled, 0);
  assert_int_equal(cs.connects, 1);
  assert_true(cs.connected);
  /* The connection survived the error frame. */
  pub(p, "jobs", "after");
  w.n = 3;
  assert_true(rvt_await(settled, &w));
  assert_string_equal(r.got[2].body, "after");
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.connects, 1);
  assert_int_equal(cs.late_fins, 1);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* The consumer's own clock, against a server without the extensions. */
static void test_cancel_on_local_timeout(void **state) {
  server s = {.no_extensions = true};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 1, .msg_timeout_ms = 1000,
                        .cancel_on_local_timeout = true};
  rv_consumer *c = consumer(&s, &o, h_block_on_ctx, &r);
  pub(p, "jobs", "slow");
  assert_true(rvt_await(rec_first_done, &r));
  assert_int_equal(r.first_rc, RV_ECANCELED);
  char want_reason[RV_CTX_REASON_MAX];
  snprintf(want_reason, sizeof want_reason, "message %s timed out (local)", r.got[0].id);
  assert_string_equal(r.first_reason, want_reason);
  assert_true(r.first_elapsed_ns >= 1000 * RV_NS_PER_MS);
  assert_true(r.first_elapsed_ns < 5 * RV_NS_PER_S);
  /* Usually redelivered too; but the local clock can fire before the
   * server's timer (both ~1 s), and then the FIN wins: no redelivery. */
  want w = {c, &r, 1};
  assert_true(rvt_await(settled, &w));
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.local_timeouts, 1);
  assert_int_equal(cs.timeouts_notified, 0);
  assert_false(cs.timeout_notify_granted);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* Against a server without the extensions, asking for them is harmless:
 * they are not granted and the consumer works as a plain NSQ consumer. */
static void test_extensions_refused(void **state) {
  server s = {.no_extensions = true};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 1, .cancel_on_server_timeout = true, .hold_slots = true};
  rv_consumer *c = consumer(&s, &o, h_fin, &r);
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_false(cs.timeout_notify_granted);
  assert_false(cs.hold_slots_granted);
  pub(p, "jobs", "plain");
  want w = {c, &r, 1};
  assert_true(rvt_await(settled, &w));
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* auto_touch keeps a 2.5 s handler's message alive with msg_timeout 1000
 * (cancel_on_server_timeout is on too, so a timeout would show). */
static void test_auto_touch(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 1, .msg_timeout_ms = 1000, .auto_touch = true,
                        .cancel_on_server_timeout = true, .cancel_on_local_timeout = true};
  rv_consumer *c = consumer(&s, &o, h_long, &r);
  pub(p, "jobs", "long");
  assert_true(rvt_await(rec_first_done, &r));
  assert_int_equal(r.first_rc, RV_OK);
  assert_true(r.first_elapsed_ns >= LONG_HANDLER_NS);
  want w = {c, &r, 1};
  assert_true(rvt_await(settled, &w));
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.received, 1);
  assert_int_equal(cs.finished, 1);
  assert_int_equal(cs.timeouts_notified, 0);
  assert_int_equal(cs.handlers_cancelled, 0);
  assert_int_equal(cs.late_fins, 0);
  assert_true(cs.touches >= 3);
  assert_int_equal(cs.touch_failed, 0);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* Held slots: with RDY 1, a message that timed out keeps the slot until its
 * handler answers, so the redelivery waits for the late FIN. */
static void test_hold_slots(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  /* Heartbeats every second while the handler is stuck and nothing else is
   * sent: the consumer answers them, so the connection stays. */
  rv_consumer_opts o = {.max_in_flight = 1, .msg_timeout_ms = 1000, .hold_slots = true,
                        .heartbeat_interval_ms = 1000};
  rv_consumer *c = consumer(&s, &o, h_block_on_release, &r);
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_true(cs.hold_slots_granted);
  assert_false(cs.timeout_notify_granted); /* only what each option needs */
  pub(p, "jobs", "held");
  want w = {c, &r, 1};
  assert_true(rvt_await(have_n, &w));
  /* The redelivery would come at ~1 s without held slots (the test above);
   * give it 2.5 s to show it does not.  A negative check needs a wait. */
  rv_sleep(NULL, 2500 * RV_NS_PER_MS);
  assert_int_equal(rec_count(&r), 1);
  rv_ctx_cancel(r.release, "test releases the handler");
  assert_true(rvt_await(late_fin_seen, &w)); /* the late FIN frees the slot */
  w.n = 2;
  assert_true(rvt_await(settled, &w));
  assert_int_equal(r.got[1].attempts, 2);
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.connects, 1);
  assert_int_equal(cs.late_fins, 1);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* ---- late answers never act on a redelivery (attempt-qualified FIN/REQ) ---------- */

/* The server's per-client counters for topic/channel from GET /stats (the
 * one client there); false if the server has no such client. */
typedef struct srv_client {
  int64_t requeue_count, finish_count, timeout_count, late_fin_count, held_count;
} srv_client;

static bool server_client_stats(const server *s, const char *topic, const char *channel,
                                srv_client *out) {
  char path[160];
  snprintf(path, sizeof path, "/stats?format=json&topic=%s&channel=%s", topic, channel);
  char *body = NULL;
  int status = rvt_http(rv_qsrv_http_port(s->q), "GET", path, NULL, &body);
  assert_int_equal(status, 200);
  json_error_t err;
  json_t *root = json_loads(body, 0, &err);
  free(body);
  assert_non_null(root);
  json_t *tj = json_array_get(json_object_get(root, "topics"), 0);
  json_t *chan = json_array_get(json_object_get(tj, "channels"), 0);
  json_t *cl = json_array_get(json_object_get(chan, "clients"), 0);
  bool found = json_is_object(cl);
  if (found) {
    out->requeue_count = json_integer_value(json_object_get(cl, "requeue_count"));
    out->finish_count = json_integer_value(json_object_get(cl, "finish_count"));
    out->timeout_count = json_integer_value(json_object_get(cl, "timeout_count"));
    out->late_fin_count = json_integer_value(json_object_get(cl, "late_fin_count"));
    out->held_count = json_integer_value(json_object_get(cl, "held_count"));
  }
  json_decref(root);
  return found;
}

/* Block until this delivery's context is cancelled, then requeue at once. */
static int h_req_when_cancelled(rv_ctx *ctx, const rv_message *m, void *arg) {
  rec_add(arg, m);
  rv_sleep(ctx, SLOW_SLEEP_NS);
  return RV_MSG_REQUEUE;
}

#define CHURN_MAX_IN_FLIGHT 2
#define CHURN_TIMEOUTS 10

typedef struct churn {
  rv_consumer *c;
  uint64_t max_threads; /* the most handler threads seen alive */
  uint64_t max_held;    /* the most held_slots seen */
} churn;

static bool churn_timeouts(void *arg) {
  churn *k = arg;
  rv_consumer_stats st;
  rv_consumer_stats_get(k->c, &st);
  if (st.handler_threads_alive > k->max_threads)
    k->max_threads = st.handler_threads_alive;
  if (st.held_slots > k->max_held)
    k->max_held = st.held_slots;
  return st.timeouts_notified >= CHURN_TIMEOUTS;
}

static bool churn_answers_settled(void *arg) {
  churn *k = arg;
  rv_consumer_stats st;
  rv_consumer_stats_get(k->c, &st);
  if (st.handler_threads_alive > k->max_threads)
    k->max_threads = st.handler_threads_alive;
  /* every REQ sent so far has had its (error) answer */
  return st.requeued > 0 && st.late_reqs == st.requeued;
}

/*
 * The incident's pile-up.  Every handler blocks until its context is
 * cancelled and then answers REQ, so every delivery times out at the
 * server, which says so (type 3) and redelivers the same id to this very
 * consumer, back to back.  The cancelled handler's REQ is late: it must not
 * requeue the redelivery from under the new handler (which would then never
 * hear of its own timeout, never be cancelled, and keep its thread while the
 * server hands its slot to more work).  With attempt-qualified answers every
 * REQ here is refused (E_REQ_FAILED), the server counts no requeue, every
 * notified timeout cancels a handler, and the handler threads stay within
 * RDY plus the few that are between cancellation and exit.
 */
static void late_answers_never_act_on_redelivery(bool hold_slots) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.topic = "churn",
                        .max_in_flight = CHURN_MAX_IN_FLIGHT,
                        .msg_timeout_ms = RV_NSQ_MIN_MSG_TIMEOUT_MS,
                        .cancel_on_server_timeout = true,
                        .hold_slots = hold_slots,
                        .stop_timeout_ms = 200};
  /* Published first, so that the first two deliveries (and their timeouts)
   * come together: with held slots, a late answer can then only meet a
   * redelivery of its id when the other message's answer freed the slot
   * first, which this makes likely. */
  const void *bodies[3] = {"x", "y", "z"};
  const size_t lens[3] = {1, 1, 1};
  assert_int_equal(rv_producer_mpub(NULL, p, "churn", bodies, lens, 3), RV_OK);
  rv_consumer *c = consumer(&s, &o, h_req_when_cancelled, &r);
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_true(cs.timeout_notify_granted);
  assert_int_equal(cs.hold_slots_granted, hold_slots);
  churn k = {.c = c};
  assert_true(rvt_await(churn_timeouts, &k));
  /* Each REQ comes from a handler whose delivery had timed out: all late,
   * so the server never requeued anything on this client's word. */
  srv_client sc;
  assert_true(server_client_stats(&s, "churn", "workers", &sc));
  assert_int_equal(sc.requeue_count, 0);
  assert_true(sc.timeout_count >= CHURN_TIMEOUTS);
  assert_true(rvt_await(churn_answers_settled, &k));
  rv_consumer_stats_get(c, &cs);
  assert_true(server_client_stats(&s, "churn", "workers", &sc));
  assert_true(cs.requeued >= CHURN_TIMEOUTS / 2);
  assert_int_equal(sc.requeue_count, (int64_t)(cs.requeued - cs.late_reqs));
  assert_int_equal(sc.requeue_count, 0);
  assert_true(sc.late_fin_count >= (int64_t)cs.late_reqs);
  assert_int_equal(cs.late_fins, 0);
  assert_int_equal(cs.finished, 0);
  /* Every notified timeout cancelled the handler of the delivery that timed
   * out: none left running uncancelled. */
  assert_int_equal(cs.handlers_cancelled, cs.timeouts_notified);
  assert_true(cs.timeouts_notified >= CHURN_TIMEOUTS);
  assert_true(k.max_threads <= CHURN_MAX_IN_FLIGHT + 2);
  assert_true(cs.handler_threads_alive <= CHURN_MAX_IN_FLIGHT + 2);
  if (!hold_slots)
    assert_int_equal(k.max_held, 0);
  assert_true(cs.held_slots <= cs.handler_threads_alive);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

static void test_late_answers_never_act_on_redelivery(void **state) {
  late_answers_never_act_on_redelivery(false);
}

static void test_late_answers_never_act_on_redelivery_held(void **state) {
  late_answers_never_act_on_redelivery(true);
}

static bool held_slots_is_1(void *arg) {
  rv_consumer_stats st;
  rv_consumer_stats_get(arg, &st);
  return st.timeouts_notified == 1 && st.held_slots == 1;
}

/* rv_consumer_stats.held_slots: a handler still running after the server
 * said its message timed out, on a connection that granted hold_slots. */
static void test_held_slots_stat(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 1, .msg_timeout_ms = 1000, .hold_slots = true,
                        .cancel_on_server_timeout = true, .heartbeat_interval_ms = 1000};
  rv_consumer *c = consumer(&s, &o, h_block_on_release, &r); /* ignores its ctx */
  pub(p, "jobs", "held");
  assert_true(rvt_await(held_slots_is_1, c));
  srv_client sc;
  assert_true(server_client_stats(&s, "jobs", "workers", &sc));
  assert_int_equal(sc.held_count, 1);
  /* the handler answers FIN <id> 1: late, refused, and the slot comes back */
  rv_ctx_cancel(r.release, "test releases the handler");
  want w = {c, &r, 2};
  assert_true(rvt_await(settled, &w));
  assert_int_equal(r.got[1].attempts, 2);
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.held_slots, 0);
  assert_int_equal(cs.late_fins, 1);
  assert_int_equal(cs.finished, 2);
  assert_true(server_client_stats(&s, "jobs", "workers", &sc));
  assert_int_equal(sc.held_count, 0);
  assert_int_equal(sc.finish_count, 1);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

typedef struct regq {
  int want;
  char ids[8][RV_NSQ_MSG_ID_SIZE_BYTES + 1];
  int nids;
} regq;

static bool handlers_in_registry(void *arg) {
  regq *q = arg;
  rv_snapshot *s = rv_snapshot_take(rv_registry_current());
  int found = 0;
  for (size_t i = 0; s && i < s->nthreads; i++) {
    const rv_thread_snap *t = &s->threads[i];
    if (strncmp(t->name, "handler-", 8) != 0 || strcmp(t->role, "queue-handler") != 0)
      continue;
    for (int k = 0; k < q->nids; k++) {
      char prefix[64];
      snprintf(prefix, sizeof prefix, "msg %s attempt 1 jobs/workers", q->ids[k]);
      if (strcmp(t->task, prefix) == 0)
        found++;
    }
  }
  rv_snapshot_free(s);
  return found == q->want;
}

/* One thread per in-flight message, named and annotated for dumps. */
static void test_handler_threads_in_registry(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 3};
  rv_consumer *c = consumer(&s, &o, h_block_all, &r);
  pub(p, "jobs", "a");
  pub(p, "jobs", "b");
  pub(p, "jobs", "c");
  want w = {c, &r, 3};
  assert_true(rvt_await(have_n, &w));
  regq q = {.want = 3, .nids = 3};
  for (int i = 0; i < 3; i++)
    memcpy(q.ids[i], r.got[i].id, sizeof q.ids[i]);
  assert_true(rvt_await(handlers_in_registry, &q));
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.handler_threads_alive, 3);
  assert_int_equal(cs.in_flight, 3);
  rv_ctx_cancel(r.release, "test releases the handlers");
  assert_true(rvt_await(settled, &w));
  assert_true(rvt_await(no_handler_threads, &w));
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* The fixed pool: pool_size threads, messages queue for them. */
static void test_pool_mode(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 8, .mode = RV_CONSUMER_POOL, .pool_size = 2};
  rv_consumer *c = consumer(&s, &o, h_fin, &r);
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.handler_threads_alive, 2);
  for (int i = 0; i < 20; i++)
    pub(p, "jobs", "pooled");
  want w = {c, &r, 20};
  assert_true(rvt_await(settled, &w));
  assert_true(rvt_await(finished_n, &w));
  assert_int_equal(rv_consumer_stop(c), RV_OK);
  rv_consumer_stats_get(c, &cs);
  assert_int_equal(cs.handler_threads_alive, 0);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* Stop cancels handlers that outlive the bound. */
static void test_stop_cancels_stuck_handlers(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 1, .stop_timeout_ms = 200};
  rv_consumer *c = consumer(&s, &o, h_block_on_ctx, &r);
  pub(p, "jobs", "stuck");
  want w = {c, &r, 1};
  assert_true(rvt_await(have_n, &w));
  assert_int_equal(rv_consumer_stop(c), RV_OK);
  assert_true(rec_first_done(&r));
  assert_int_equal(r.first_rc, RV_ECANCELED);
  assert_string_equal(r.first_reason, "consumer stopping");
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* The producer survives a server restart on the same port. */
static void test_producer_reconnects_after_restart(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  pub(p, "jobs", "before");
  server_stop(&s);
  server_start(&s); /* same port, same data */
  rv_ctx *ctx = rv_ctx_with_timeout(NULL, RVT_BOUND_NS);
  assert_int_equal(rv_producer_pub(ctx, p, "jobs", "after", 5), RV_OK);
  rv_ctx_free(ctx);
  rv_producer_stats ps;
  rv_producer_stats_get(p, &ps);
  assert_int_equal(ps.connects, 2);
  assert_true(ps.connection_losses >= 1);
  assert_int_equal(ps.published, 2);
  /* Both are there (the first survived the restart on disk). */
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 1};
  rv_consumer *c = consumer(&s, &o, h_fin, &r);
  want w = {c, &r, 2};
  assert_true(rvt_await(settled, &w));
  assert_string_equal(r.got[0].body, "before");
  assert_string_equal(r.got[1].body, "after");
  rv_consumer_free(c);
  rec_free(&r);
  rv_producer_close(p);
  server_stop(&s);
  server_cleanup(&s);
}

static bool connects_2(void *arg) {
  want *w = arg;
  rv_consumer_stats st;
  rv_consumer_stats_get(w->c, &st);
  return st.connects >= 2 && st.connected;
}

static bool saw_after(void *arg) {
  rec *r = arg;
  rv_mutex_lock(&r->mu);
  bool found = false;
  for (int i = 0; i < r->n; i++)
    found = found || strcmp(r->got[i].body, "after") == 0;
  rv_mutex_unlock(&r->mu);
  return found;
}

/* The consumer reconnects (IDENTIFY, SUB, RDY again) after a restart. */
static void test_consumer_reconnects_after_restart(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer *p = producer(&s);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 1};
  rv_consumer *c = consumer(&s, &o, h_fin, &r);
  pub(p, "jobs", "before");
  want w = {c, &r, 1};
  assert_true(rvt_await(settled, &w));
  server_stop(&s);
  server_start(&s);
  assert_true(rvt_await(connects_2, &w));
  pub(p, "jobs", "after");
  /* "before" may come again (its FIN may not have reached the server before
   * the stop: at-least-once); "after" must come. */
  assert_true(rvt_await(saw_after, &r));
  rv_consumer_stats cs;
  rv_consumer_stats_get(c, &cs);
  assert_true(cs.connection_losses >= 1);
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

/* A publish to a server that is gone fails after the bounded retries, or
 * when its context ends first. */
static void test_producer_gives_up(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer_opts po = {.host = "127.0.0.1", .port = s.port, .max_attempts = 3,
                         .backoff_ms = 10};
  rv_producer *p = NULL;
  assert_int_equal(rv_producer_open(&p, NULL, &po), RV_OK);
  server_stop(&s);
  int rc = rv_producer_pub(NULL, p, "jobs", "lost", 4);
  assert_true(rc == RV_ECONNREFUSED || rc == RV_ECLOSED);
  rv_producer_stats ps;
  rv_producer_stats_get(p, &ps);
  assert_true(ps.retries >= 2);
  rv_ctx *ctx = rv_ctx_new(NULL);
  rv_ctx_cancel(ctx, "test gives up");
  assert_int_equal(rv_producer_pub(ctx, p, "jobs", "lost", 4), RV_ECANCELED);
  rv_ctx_free(ctx);
  rv_producer_close(p);
  server_cleanup(&s);
}

/* A fake NSQ server that accepts one connection, sends a heartbeat and
 * records what it reads, never answering: to see the NOP, the in-flight
 * bound and cancellation of a caller waiting for room or for its answer. */
typedef struct fake {
  rv_listener *l;
  rv_ctx *ctx;
  rv_thread *t;
  rv_mutex mu;
  char got[4096];
  size_t len;
} fake;

static void fake_run(void *arg) {
  fake *f = arg;
  rv_conn *conn;
  if (rv_listener_accept(f->l, &conn, f->ctx) != RV_OK)
    return;
  rv_nsq_buf b;
  rv_nsq_buf_init(&b, 0);
  rv_nsq_enc_heartbeat(&b);
  rv_conn_write_all(conn, b.data, b.len, f->ctx);
  rv_nsq_buf_free(&b);
  char buf[1024];
  ssize_t n;
  while ((n = rv_conn_read(conn, buf, sizeof buf, f->ctx)) > 0) {
    rv_mutex_lock(&f->mu);
    size_t k = (size_t)n < sizeof f->got - f->len ? (size_t)n : sizeof f->got - f->len;
    memcpy(f->got + f->len, buf, k);
    f->len += k;
    rv_mutex_unlock(&f->mu);
  }
  rv_conn_close(conn);
}

static bool fake_saw(fake *f, const char *what, size_t len) {
  rv_mutex_lock(&f->mu);
  bool found = memmem(f->got, f->len, what, len) != NULL;
  rv_mutex_unlock(&f->mu);
  return found;
}

static bool fake_saw_nop(void *arg) { return fake_saw(arg, "NOP\n", 4); }
static bool fake_saw_pub(void *arg) { return fake_saw(arg, "PUB jobs\n", 9); }

typedef struct blocked_pub {
  rv_producer *p;
  rv_ctx *ctx;
  int rc;
} blocked_pub;

static void blocked_pub_run(void *arg) {
  blocked_pub *b = arg;
  b->rc = rv_producer_pub(b->ctx, b->p, "jobs", "first", 5);
}

static bool one_in_flight(void *arg) {
  rv_producer_stats st;
  rv_producer_stats_get(arg, &st);
  return st.inflight_requests == 1;
}

static void test_producer_heartbeat_bound_and_cancel(void **state) {
  fake f = {0};
  rv_mutex_init(&f.mu, "test-fake");
  assert_int_equal(rv_tcp_listen(&f.l, "127.0.0.1", 0, 4), RV_OK);
  f.ctx = rv_ctx_new(NULL);
  assert_int_equal(rv_thread_start(&f.t, "fake-nsqd", "test", fake_run, &f), RV_OK);
  rv_producer_opts po = {.host = "127.0.0.1", .port = rv_listener_port(f.l),
                         .max_inflight_requests = 1};
  rv_producer *p = NULL;
  assert_int_equal(rv_producer_open(&p, NULL, &po), RV_OK);
  assert_true(rvt_await(fake_saw_nop, &f)); /* the heartbeat was answered */

  /* A publish that never gets its answer fills the bound... */
  blocked_pub a = {.p = p, .ctx = rv_ctx_new(NULL), .rc = 1};
  rv_thread *at;
  assert_int_equal(rv_thread_start(&at, "blocked-pub", "test", blocked_pub_run, &a), RV_OK);
  assert_true(rvt_await(one_in_flight, p));
  assert_true(rvt_await(fake_saw_pub, &f));
  /* ...so the next caller waits for room, until its deadline. */
  int64_t t0 = rv_now_ns();
  rv_ctx *dl = rv_ctx_with_timeout(NULL, 200 * RV_NS_PER_MS);
  assert_int_equal(rv_producer_pub(dl, p, "jobs", "second", 6), RV_EDEADLINE);
  assert_true(rv_now_ns() - t0 >= 190 * RV_NS_PER_MS);
  rv_ctx_free(dl);
  assert_false(fake_saw(&f, "second", 6)); /* it never went on the wire */
  /* The caller waiting for its answer is released by its context. */
  rv_ctx_cancel(a.ctx, "test gives up");
  rv_thread_join(at);
  assert_int_equal(a.rc, RV_ECANCELED);
  rv_ctx_free(a.ctx);
  rv_producer_close(p);
  rv_ctx_cancel(f.ctx, "test done");
  rv_thread_join(f.t);
  rv_ctx_free(f.ctx);
  rv_listener_close(f.l);
  rv_mutex_destroy(&f.mu);
}

static bool fake_saw_identify(void *arg) { return fake_saw(arg, "user_agent", 10); }

static void fake_start(fake *f) {
  memset(f, 0, sizeof *f);
  rv_mutex_init(&f->mu, "test-fake");
  assert_int_equal(rv_tcp_listen(&f->l, "127.0.0.1", 0, 4), RV_OK);
  f->ctx = rv_ctx_new(NULL);
  assert_int_equal(rv_thread_start(&f->t, "fake-nsqd", "test", fake_run, f), RV_OK);
}

static void fake_stop(fake *f) {
  rv_ctx_cancel(f->ctx, "test done");
  rv_thread_join(f->t);
  rv_ctx_free(f->ctx);
  rv_listener_close(f->l);
  rv_mutex_destroy(&f->mu);
}

/* The extensions are asked for only when an option needs them: with every
 * option off, IDENTIFY is what go-nsq or nsqjs would send. */
static void test_identify_asks_only_for_what_options_need(void **state) {
  for (int on = 0; on < 2; on++) {
    fake f;
    fake_start(&f);
    rec r;
    rec_init(&r);
    rv_consumer_opts o = {.host = "127.0.0.1", .port = rv_listener_port(f.l), .topic = "jobs",
                          .channel = "workers", .handler = h_fin, .handler_arg = &r,
                          .cancel_on_local_timeout = true, .auto_touch = true,
                          .cancel_on_server_timeout = on, .hold_slots = on};
    rv_consumer *c = NULL;
    assert_int_equal(rv_consumer_open(&c, &o), RV_OK);
    assert_true(rvt_await(fake_saw_identify, &f));
    assert_true(fake_saw(&f, "IDENTIFY\n", 9));
    assert_true(fake_saw(&f, "\"feature_negotiation\":true", 26));
    assert_int_equal(fake_saw(&f, "timeout_notify", 14), on);
    assert_int_equal(fake_saw(&f, "hold_slots", 10), on);
    /* Stopping interrupts the handshake the fake never answers. */
    assert_int_equal(rv_consumer_stop(c), RV_OK);
    rv_consumer_free(c);
    rec_free(&r);
    fake_stop(&f);
  }
}

/* Many threads on one producer, with a small in-flight bound. */
#define PUB_THREADS 4
#define PUBS_PER_THREAD 50

typedef struct pubber {
  rv_producer *p;
  int failures;
  int id;
} pubber;

static void pub_thread(void *arg) {
  pubber *b = arg;
  for (int i = 0; i < PUBS_PER_THREAD; i++) {
    char body[32];
    int n = snprintf(body, sizeof body, "t%d-%d", b->id, i);
    if (rv_producer_pub(NULL, b->p, "jobs", body, (size_t)n) != RV_OK)
      b->failures++;
  }
}

static void test_concurrent_publishers_bounded(void **state) {
  server s = {0};
  server_start(&s);
  rv_producer_opts po = {.host = "127.0.0.1", .port = s.port, .max_inflight_requests = 2};
  rv_producer *p = NULL;
  assert_int_equal(rv_producer_open(&p, NULL, &po), RV_OK);
  rec r;
  rec_init(&r);
  rv_consumer_opts o = {.max_in_flight = 50};
  rv_consumer *c = consumer(&s, &o, h_fin, &r);
  pubber b[PUB_THREADS];
  rv_thread *t[PUB_THREADS];
  for (int i = 0; i < PUB_THREADS; i++) {
    b[i] = (pubber){.p = p, .id = i};
    assert_int_equal(rv_thread_start(&t[i], "publisher", "test", pub_thread, &b[i]), RV_OK);
  }
  for (int i = 0; i < PUB_THREADS; i++) {
    rv_thread_join(t[i]);
    assert_int_equal(b[i].failures, 0);
  }
  rv_producer_stats ps;
  rv_producer_stats_get(p, &ps);
  assert_int_equal(ps.published, PUB_THREADS * PUBS_PER_THREAD);
  assert_int_equal(ps.inflight_requests, 0);
  want w = {c, &r, PUB_THREADS * PUBS_PER_THREAD};
  assert_true(rvt_await(settled, &w));
  /* Every message once (handlers run concurrently: no order to check). */
  bool got[PUB_THREADS][PUBS_PER_THREAD] = {{false}};
  for (int i = 0; i < r.n; i++) {
    int tid, k;
    assert_int_equal(sscanf(r.got[i].body, "t%d-%d", &tid, &k), 2);
    assert_true(tid >= 0 && tid < PUB_THREADS && k >= 0 && k < PUBS_PER_THREAD);
    assert_false(got[tid][k]);
    got[tid][k] = true;
  }
  rv_consumer_free(c);
  rv_producer_close(p);
  rec_free(&r);
  server_stop(&s);
  server_cleanup(&s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_pub_mpub_dpub_consumed),
      cmocka_unit_test(test_server_error_then_reconnect),
      cmocka_unit_test(test_fin_and_req_delay),
      cmocka_unit_test(test_cancel_on_server_timeout),
      cmocka_unit_test(test_no_cancel_without_option_and_late_fin),
      cmocka_unit_test(test_cancel_on_local_timeout),
      cmocka_unit_test(test_extensions_refused),
      cmocka_unit_test(test_auto_touch),
      cmocka_unit_test(test_hold_slots),
      cmocka_unit_test(test_late_answers_never_act_on_redelivery),
      cmocka_unit_test(test_late_answers_never_act_on_redelivery_held),
      cmocka_unit_test(test_held_slots_stat),
      cmocka_unit_test(test_handler_threads_in_registry),
      cmocka_unit_test(test_pool_mode),
      cmocka_unit_test(test_stop_cancels_stuck_handlers),
      cmocka_unit_test(test_producer_reconnects_after_restart),
      cmocka_unit_test(test_consumer_reconnects_after_restart),
      cmocka_unit_test(test_producer_gives_up),
      cmocka_unit_test(test_producer_heartbeat_bound_and_cancel),
      cmocka_unit_test(test_identify_asks_only_for_what_options_need),
      cmocka_unit_test(test_concurrent_publishers_bounded),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
